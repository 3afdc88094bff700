"""The service proxy at scale, against kube-proxy's iptables-mode ruleset in the same run.

Driven by bench/services.sh (which builds podnet and installs what is needed). For each size N:

1. A one-node lab (its own CNI configuration, so no agent runs in it) with three whoami pods
   (A, B, C) and N selectorless Services, each with an EndpointSlice of A and B, port 80.
2. Cold sync: `podnet agent --controllers proxy` is started in the node's namespace; the time
   until the last service answers a TCP connect; the agent's CPU time and RSS then, and the
   largest `nft` process seen meanwhile.
3. Endpoint changes of the last service's slice (`lab apply`), CHANGES of each kind, medians:
   "resize" (A,B to C alone and back: the endpoint count changes, so does the service's
   verdict) and "replace" (A,B to A,C and back: same count, only endpoint elements change).
   Measured from the moment the lab's control plane published the change (its log, as an API
   server's watch would carry it) until the service answers from the new endpoint; and the
   agent's own sync time for it (its log).
4. Connect latency (SYN to SYN-ACK, from the node): to the first service, to the last, and
   straight to pod A, interleaved.
5. The peer: the agent stopped and its table removed, the same services as kube-proxy's
   iptables mode writes them (KUBE-SERVICES with one rule per service, walked in order, a
   KUBE-SVC chain per service picking a KUBE-SEP chain per endpoint) loaded with
   iptables-restore: load time, the time of kube-proxy's full re-sync after one endpoint change
   and of a minimal one (only the changed chains, --noflush), and the same connect latencies.

    python3 bench/services.py PODNET SIZES [PEER_MAX]
"""

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

LAB = "svcbench"
NODE_NS = f"{LAB}_node1"
PODS = {"a": "10.244.0.2", "b": "10.244.0.3", "c": "10.244.0.4"}
# The client of the latency measurement, a pod like any other (it gets the next address).
CLIENT_NS = f"{LAB}_default_client"
SERVICE_BASE = 10 << 24 | 96 << 16 | 1 << 8  # 10.96.1.0: services from 10.96.1.0 on
LATENCY_SAMPLES = 1500
# Endpoint changes of each kind: (new endpoints of the last service, the pod that shows it).
CHANGES = {
    "resize": [(["c"], "c"), (["a", "b"], "a")] * 3,
    "replace": [(["a", "c"], "c"), (["a", "b"], "b")] * 3,
}


def service_ip(index):
    value = SERVICE_BASE + index
    return ".".join(str(value >> shift & 255) for shift in (24, 16, 8, 0))


def lab_file(count, last_endpoints):
    """The lab: one node, three pods, `count` services; the last one's endpoints as given."""
    cni = json.dumps({"cniVersion": "1.0.0", "name": "bench", "type": "bridge", "bridge": "cni0",
                      "isGateway": True, "ipam": {"type": "host-local", "subnet": "10.244.0.0/24",
                                                  "routes": [{"dst": "0.0.0.0/0"}]}})
    parts = [f"apiVersion: podnet.dev/v1alpha1\nkind: Lab\nmetadata: {{name: {LAB}}}\n"
             f"spec: {{nodes: 1, serviceCIDR: 10.96.0.0/12, cni: {cni}}}\n"]
    for name in PODS:
        parts.append(f"---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\n"
                     f"spec: {{containers: [{{name: whoami, image: traefik/whoami}}]}}\n")
    parts.append("---\napiVersion: v1\nkind: Pod\nmetadata: {name: client}\n"
                 "spec: {containers: [{name: c, image: busybox, command: [sleep, infinity]}]}\n")
    for index in range(count):
        name = f"s{index}"
        endpoints = last_endpoints if index == count - 1 else ["a", "b"]
        addresses = ", ".join(f"{{addresses: [{PODS[e]}]}}" for e in endpoints)
        parts.append(f"---\n{{apiVersion: v1, kind: Service, metadata: {{name: {name}}}, "
                     f"spec: {{clusterIP: {service_ip(index)}, ports: [{{port: 80}}]}}}}\n")
        parts.append(f"---\n{{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: "
                     f"{{name: {name}-1, labels: {{kubernetes.io/service-name: {name}}}}}, "
                     f"addressType: IPv4, endpoints: [{addresses}], ports: [{{port: 80}}]}}\n")
    return "".join(parts)


def in_node(*command, **kwargs):
    return subprocess.run(["ip", "netns", "exec", NODE_NS, *command], **kwargs)


PROBE = r"""
import socket, sys, time
address, want, deadline = sys.argv[1], sys.argv[2], time.time() + float(sys.argv[3])
while time.time() < deadline:
    try:
        s = socket.create_connection((address, 80), timeout=0.2)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        body = s.makefile().read()
        s.close()
        if want == "-" or ("Hostname: " + want + "\n") in body:
            print(time.time()); sys.exit(0)
    except OSError:
        pass
    time.sleep(0.001)
sys.exit(1)
"""

LATENCY = r"""
import socket, sys, time, json
targets, samples = sys.argv[1].split(","), int(sys.argv[2])
times = {t: [] for t in targets}
for _ in range(samples):
    for t in targets:
        s = socket.socket(); s.settimeout(2)
        start = time.perf_counter_ns(); s.connect((t, 80)); end = time.perf_counter_ns()
        s.close(); times[t].append((end - start) / 1000)
print(json.dumps(times))
"""


def wait_answer(address, want, limit):
    """Time (epoch seconds) when `address` first answered (from pod `want`, or anyone)."""
    done = in_node("python3", "-c", PROBE, address, want, str(limit), capture_output=True, text=True)
    return float(done.stdout) if done.returncode == 0 else None


def latencies(targets):
    """Connect latency from the client pod (pod to service: DNAT only, as most traffic)."""
    done = subprocess.run(["ip", "netns", "exec", CLIENT_NS, "python3", "-c", LATENCY, ",".join(targets),
                           str(LATENCY_SAMPLES)], capture_output=True, text=True, check=True)
    result = {}
    for target, values in json.loads(done.stdout).items():
        values.sort()
        result[target] = (statistics.median(values), values[int(len(values) * 0.99)])
    return result


def published_at():
    """When the lab daemon last published the changes of an apply (epoch seconds)."""
    from datetime import datetime
    with open(f"/run/podnet/labs/{LAB}/daemon.log") as log:
        lines = [line for line in log if "object changes published" in line]
    if not lines:
        return None
    return datetime.fromisoformat(lines[-1].split()[0]).timestamp()


def process_figures(pid):
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    with open(f"/proc/{pid}/stat") as stat:
        parts = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(parts[11]) + int(parts[12])) / ticks
    return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024, cpu


def largest_nft():
    peak = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/comm") as comm:
                    if comm.read().strip() != "nft":
                        continue
                with open(f"/proc/{pid}/status") as status:
                    for line in status:
                        if line.startswith("VmHWM"):
                            peak = max(peak, int(line.split()[1]) // 1024)
            except OSError:
                pass
    return peak


def iptables_rules(count, last_endpoints):
    """kube-proxy's iptables-mode nat table for the services."""
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]",
             ":KUBE-SERVICES - [0:0]", ":KUBE-MARK-MASQ - [0:0]", ":KUBE-POSTROUTING - [0:0]"]
    chains, rules = [], []
    for index in range(count):
        endpoints = last_endpoints if index == count - 1 else ["a", "b"]
        svc = f"KUBE-SVC-{index:016X}"
        chains.append(f":{svc} - [0:0]")
        rules.append(f"-A KUBE-SERVICES -d {service_ip(index)}/32 -p tcp -m comment --comment \"default/s{index}\" "
                     f"-m tcp --dport 80 -j {svc}")
        for position, endpoint in enumerate(endpoints):
            sep = f"KUBE-SEP-{index:012X}{endpoint.upper()}000"
            chains.append(f":{sep} - [0:0]")
            remaining = len(endpoints) - position
            if remaining > 1:
                rules.append(f"-A {svc} -m statistic --mode random --probability {1 / remaining:.10f} -j {sep}")
            else:
                rules.append(f"-A {svc} -j {sep}")
            rules.append(f"-A {sep} -s {PODS[endpoint]}/32 -j KUBE-MARK-MASQ")
            rules.append(f"-A {sep} -p tcp -m tcp -j DNAT --to-destination {PODS[endpoint]}:80")
    lines += chains
    lines += ["-A PREROUTING -j KUBE-SERVICES", "-A OUTPUT -j KUBE-SERVICES",
              "-A POSTROUTING -j KUBE-POSTROUTING",
              "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
              "-A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE"]
    lines += rules
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def minimal_change(count):
    """What kube-proxy 1.27+ sends for one endpoint change: the changed chains only."""
    index = count - 1
    svc = f"KUBE-SVC-{index:016X}"
    sep = f"KUBE-SEP-{index:012X}C000"
    old = [f"KUBE-SEP-{index:012X}{e}000" for e in "AB"]
    return "\n".join(["*nat", f":{svc} - [0:0]", f":{sep} - [0:0]", *[f":{chain} - [0:0]" for chain in old],
                      f"-A {svc} -j {sep}", f"-A {sep} -s {PODS['c']}/32 -j KUBE-MARK-MASQ",
                      f"-A {sep} -p tcp -m tcp -j DNAT --to-destination {PODS['c']}:80",
                      *[f"-X {chain}" for chain in old], "COMMIT"]) + "\n"


def restore(rules, *flags):
    start = time.time()
    in_node("iptables-restore", *flags, input=rules, text=True, check=True)
    return time.time() - start


def run_size(podnet, count, work, peer):
    figures = {"services": count}
    path = os.path.join(work, "lab.yaml")
    with open(path, "w") as file:
        file.write(lab_file(count, ["a", "b"]))
    subprocess.run([podnet, "lab", "down", "--lab", LAB], capture_output=True)
    start = time.time()
    subprocess.run([podnet, "lab", "up", path], check=True, capture_output=True)
    figures["lab_up_s"] = time.time() - start
    last, first = service_ip(count - 1), service_ip(0)

    # Cold sync.
    log = open(os.path.join(work, f"agent-{count}.log"), "w")
    started = time.time()
    agent = subprocess.Popen(["ip", "netns", "exec", NODE_NS, podnet, "agent", "--lab", LAB, "--node", "node1",
                              "--controllers", "proxy"], stderr=log, stdout=log)
    peak_nft = 0
    answered = None
    probe = subprocess.Popen(["ip", "netns", "exec", NODE_NS, "python3", "-c", PROBE, last, "-", "600"],
                             stdout=subprocess.PIPE, text=True)
    while probe.poll() is None:
        peak_nft = max(peak_nft, largest_nft())
        time.sleep(0.05)
    answered = float(probe.stdout.read())
    figures["cold_sync_s"] = answered - started
    agent_pid = int(subprocess.run(["pgrep", "-f", f"podnet agent --lab {LAB}"], capture_output=True,
                                   text=True).stdout.split()[0])
    time.sleep(1)
    rss, hwm, cpu = process_figures(agent_pid)
    figures.update(agent_rss_mb=rss, agent_peak_rss_mb=hwm, agent_cpu_s=cpu, nft_peak_rss_mb=peak_nft)

    # Endpoint changes.
    for kind, changes in CHANGES.items():
        live_ms, sync_ms = [], []
        for endpoints, shows in changes:
            with open(path, "w") as file:
                file.write(lab_file(count, endpoints))
            # The probe runs before the change, so that its own start is not measured.
            probe = subprocess.Popen(["ip", "netns", "exec", NODE_NS, "python3", "-c", PROBE, last, shows, "120"],
                                     stdout=subprocess.PIPE, text=True)
            time.sleep(0.5)
            subprocess.run([podnet, "lab", "apply", path], check=True, capture_output=True)
            output, _ = probe.communicate()
            published = published_at()
            if probe.returncode == 0 and published:
                live_ms.append((float(output) - published) * 1000)
            time.sleep(0.3)
            with open(os.path.join(work, f"agent-{count}.log")) as file:
                syncs = [line for line in file if "services planned" in line]
            sync_ms.append(float(syncs[-1].rsplit(" in ", 1)[1].split()[0]))
        figures[f"{kind}_live_ms"] = statistics.median(live_ms) if len(live_ms) == len(changes) else None
        figures[f"{kind}_agent_sync_ms"] = statistics.median(sync_ms)

    # Connect latency.
    figures["latency_us"] = latencies([first, last, PODS["a"]])

    # The peer: kube-proxy's iptables mode on the same node.
    agent.send_signal(signal.SIGTERM)
    agent.wait()
    in_node("nft", "delete", "table", "ip", "podnet-proxy")
    if peer:
        figures["peer_load_s"] = restore(iptables_rules(count, ["a", "b"]))
        wait_answer(last, "-", 30)
        figures["peer_full_resync_s"] = restore(iptables_rules(count, ["c"]))
        restore(iptables_rules(count, ["a", "b"]))
        figures["peer_minimal_change_s"] = restore(minimal_change(count), "--noflush")
        live = wait_answer(last, "c", 30)
        figures["peer_latency_us"] = latencies([first, last, PODS["a"]])
        in_node("iptables", "-t", "nat", "-F")
        in_node("iptables", "-t", "nat", "-X")
    subprocess.run([podnet, "lab", "down", "--lab", LAB], check=True, capture_output=True)
    return figures


def main():
    podnet, sizes = sys.argv[1], [int(size) for size in sys.argv[2].split(",")]
    peer_max = int(sys.argv[3]) if len(sys.argv) > 3 else 30000
    work = tempfile.mkdtemp(prefix="podnet-bench-services.")
    results = []
    for count in sizes:
        figures = run_size(podnet, count, work, count <= peer_max)
        results.append(figures)
        print(json.dumps(figures), flush=True)
    print()
    print(f"{'services':>9} {'cold sync':>10} {'resize live':>12} {'replace live':>13} {'agent RSS':>10}"
          f" {'agent CPU':>10} {'nft peak':>9} | {'peer load':>10} {'peer full':>10} {'peer min':>9}")
    for f in results:
        peer = (f"{f.get('peer_load_s', float('nan')):9.2f}s {f.get('peer_full_resync_s', float('nan')):9.2f}s "
                f"{f.get('peer_minimal_change_s', float('nan')) * 1000:7.1f}ms")
        def ms(value):
            return "failed" if value is None else f"{value:.1f}ms"
        print(f"{f['services']:>9} {f['cold_sync_s']:9.2f}s {ms(f['resize_live_ms']):>12} "
              f"{ms(f['replace_live_ms']):>13} {f['agent_rss_mb']:>8}MB {f['agent_cpu_s']:>9.2f}s "
              f"{f['nft_peak_rss_mb']:>7}MB | {peer}")
    print("\nconnect latency from a pod, p50/p99 in microseconds (first service, last service, pod direct):")
    for f in results:
        def row(latency):
            return "  ".join(f"{p50:6.1f}/{p99:6.1f}" for p50, p99 in latency.values())
        print(f"{f['services']:>9}  podnet {row(f['latency_us'])}"
              + (f"   iptables {row(f['peer_latency_us'])}" if "peer_latency_us" in f else ""))
    print("\nagent's own sync of one change, median (resize, replace):")
    for f in results:
        print(f"{f['services']:>9}  {f['resize_agent_sync_ms']:.1f}ms  {f['replace_agent_sync_ms']:.1f}ms")


if __name__ == "__main__":
    main()
