"""NetworkPolicy at scale: time to enforcement, and what policies cost the data path.

Driven by bench/policy.sh (which builds podnet and installs what is needed). One two-node lab:

1. PODS filler pods (pause, spread over both nodes, labelled app=f0..f49) and POLICIES
   policies among them (policy i selects f(i%50) and admits f((i+1)%50) on TCP port 8000+i%100),
   plus a server pod on node1 (whoami on 80, iperf3 on 5201, the RR server on 9000) and a client
   pod on node2. The server is isolated for ingress by a policy admitting the client.
2. Time to enforcement, CHANGES times: a policy "probe" is added that isolates the client for
   egress to nothing (every new connection refused), then removed, alternately; the client
   connects to the server in a tight loop throughout (10 ms timeout per attempt); the time from
   the lab daemon publishing the change (its log, as an API server's watch would carry it) to
   the start of the first attempt that shows it (so within 10 ms of when it took effect). p50/p99 over all changes, and the agent's RSS.
3. Data path: iperf3 throughput client -> server (1 stream, SECONDS s after a 1 s warm-up,
   client on core 0, server on core 1), TCP connect latency and 1-byte request/response latency
   (p50 of each block), in pairs of blocks, each pair giving a ratio; the report is the median
   ratio of the pairs with its quartiles (this machine is shared: figures taken a minute apart
   swing by 10% and more, so only many short, interleaved pairs resolve a few percent).
   a. BLOCKS pairs "policies" / "detached": the same lab and table, with the policy hook's chain
      emptied by hand for "detached"; toggling takes milliseconds, so the pairs are tight. This
      bounds what enforcement costs from above: "detached" judges nothing, while a lab without
      policies still runs the chain (established packets take its first rule, as here; a new
      connection skips only the isolated server's two set lookups).
   b. 100 pairs of 200 connects each, "policies" / "detached", toggled between the pairs (a
      tenth of a second apart): the connect latency alone, finer than (a).
   c. ROUNDS pairs "policies" / "none": the lab re-applied without the policies (seconds apart,
      so much noisier).

    python3 bench/policy.py PODNET PODS POLICIES CHANGES BLOCKS ROUNDS SECONDS
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime

LAB = "polbench"
CLIENT_NS = f"{LAB}_default_client"
RR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tcp_rr.py")

PROBE = r"""
import socket, sys, time
address = sys.argv[1]
last = None
while True:
    s = socket.socket(); s.settimeout(0.01)
    started = time.time()
    try:
        s.connect((address, 80)); opened = True
    except OSError:
        opened = False
    finally:
        s.close()
    if opened != last:
        print(started, "open" if opened else "closed", flush=True)
        last = opened
"""

CONNECT = r"""
import socket, sys, time, statistics
address, samples = sys.argv[1], int(sys.argv[2])
times = []
for _ in range(samples):
    s = socket.socket(); s.settimeout(2)
    start = time.perf_counter_ns(); s.connect((address, 80)); times.append((time.perf_counter_ns() - start) / 1000)
    s.close()
print(statistics.median(times))
"""


def lab_file(pods, policies, with_policies, probe):
    parts = [f"apiVersion: podnet.dev/v1alpha1\nkind: Lab\nmetadata: {{name: {LAB}}}\nspec: {{nodes: 2}}\n"]
    parts.append(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: server, labels: {role: server}}\n"
        "spec:\n  nodeName: node1\n  containers:\n  - {name: web, image: traefik/whoami}\n"
        "  - {name: iperf, image: networkstatic/iperf3, command: [taskset, -c, \"1\", iperf3, -s]}\n"
        f"  - {{name: rr, image: python, command: [python3, {RR}, server, \"9000\"]}}\n")
    parts.append("---\napiVersion: v1\nkind: Pod\nmetadata: {name: client, labels: {role: client}}\n"
                 "spec: {nodeName: node2, containers: [{name: c, image: busybox, command: [sleep, infinity]}]}\n")
    for index in range(pods):
        node = "node1" if index % 2 == 0 else "node2"
        parts.append(f"---\n{{apiVersion: v1, kind: Pod, metadata: {{name: f{index}, labels: {{app: f{index % 50}}}}}, "
                     f"spec: {{nodeName: {node}, containers: [{{name: p, image: pause}}]}}}}\n")
    if with_policies:
        for index in range(policies):
            parts.append(
                f"---\n{{apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {{name: p{index}}}, "
                f"spec: {{podSelector: {{matchLabels: {{app: f{index % 50}}}}}, ingress: [{{from: "
                f"[{{podSelector: {{matchLabels: {{app: f{(index + 1) % 50}}}}}}}], ports: [{{port: {8000 + index % 100}}}]}}]}}}}\n")
        parts.append("---\n{apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: server}, "
                     "spec: {podSelector: {matchLabels: {role: server}}, ingress: [{from: "
                     "[{podSelector: {matchLabels: {role: client}}}]}]}}\n")
    if probe:
        parts.append("---\n{apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: probe}, "
                     "spec: {podSelector: {matchLabels: {role: client}}, policyTypes: [Egress]}}\n")
    return "".join(parts)


def podnet(binary, *args, **kwargs):
    return subprocess.run([binary, *args], check=True, **kwargs)


def apply(binary, path, text):
    with open(path, "w") as out:
        out.write(text)
    podnet(binary, "lab", "apply", path, stdout=subprocess.DEVNULL)


def published_at():
    with open(f"/run/podnet/labs/{LAB}/daemon.log") as log:
        lines = [line for line in log if "object changes published" in line]
    return datetime.fromisoformat(lines[-1].split()[0]).timestamp()


def in_client(*command, **kwargs):
    return subprocess.run(["ip", "netns", "exec", CLIENT_NS, *command], **kwargs)


def pod_ip(binary, name):
    pods = json.loads(podnet(binary, "lab", "get", "pods", name, capture_output=True).stdout)
    return pods["items"][0]["status"]["podIP"]


def agent_rss(node):
    for pid in subprocess.run(["ip", "netns", "pids", f"{LAB}_{node}"], capture_output=True,
                              text=True).stdout.split():
        try:
            with open(f"/proc/{pid}/cmdline") as cmdline:
                if "agent" not in cmdline.read():
                    continue
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            continue
    return float("nan")


def settle():
    """Waits until no nft runs (the agents' commits of a big change go through it), then two
    seconds more for what follows them."""
    while subprocess.run(["pgrep", "-x", "nft"], stdout=subprocess.DEVNULL).returncode == 0:
        time.sleep(0.2)
    time.sleep(2)


def data_path(server):
    """One block: (iperf3 Gbit/s, connect p50 us, RR p50 us)."""
    iperf = in_client("taskset", "-c", "0", "iperf3", "-c", server, "-t", SECONDS, "-O", "1", "-J",
                      capture_output=True, text=True, check=True)
    gbits = json.loads(iperf.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
    connect = float(in_client("python3", "-c", CONNECT, server, "500", capture_output=True, text=True,
                              check=True).stdout)
    rr = in_client("python3", RR, "client", server, "9000", "2000", capture_output=True, text=True, check=True)
    return gbits, connect, float(rr.stdout.split()[0])


def quartiles(values):
    values = sorted(values)
    pick = lambda fraction: values[min(len(values) - 1, int(len(values) * fraction))]
    return statistics.median(values), pick(0.25), pick(0.75)


def report(name, pairs):
    """Prints the medians of each side and the median ratio of the pairs (ours/peer)."""
    print(f"{name}, {len(pairs)} pairs of blocks (client node2 -> server node1):")
    print(f"  {'':10} {'iperf3 Gbit/s':>14} {'connect us':>11} {'RR p50 us':>10}")
    for side, label in ((0, "policies"), (1, name.split("/")[1])):
        gbits, connect, rr = (statistics.median(column) for column in zip(*(pair[side] for pair in pairs)))
        print(f"  {label:10} {gbits:14.2f} {connect:11.1f} {rr:10.1f}")
    line = []
    for column, label in enumerate(("throughput", "connect", "RR")):
        median, low, high = quartiles([ours[column] / peer[column] for ours, peer in pairs])
        line.append(f"{label} {median:.3f} [{low:.3f}, {high:.3f}]")
    print("  median ratio [quartiles]: " + ", ".join(line), flush=True)


def detach_hook(saved):
    """Empties the policy table's forward chain on both nodes and returns its rules (as `nft -j`
    lists them), or puts `saved` back (the agent itself only rewrites the chain when its
    structure changes)."""
    rules = {}
    for node in ("node1", "node2"):
        netns = ["ip", "netns", "exec", f"{LAB}_{node}", "nft"]
        if saved is None:
            listing = json.loads(subprocess.run(netns + ["-j", "list", "chain", "ip", "podnet-policy", "forward"],
                                                capture_output=True, text=True, check=True).stdout)
            rules[node] = [item["rule"] for item in listing["nftables"] if "rule" in item]
            subprocess.run(netns + ["flush", "chain", "ip", "podnet-policy", "forward"], check=True)
        else:
            commands = [{"add": {"rule": {key: value for key, value in rule.items() if key != "handle"}}}
                        for rule in saved[node]]
            subprocess.run(netns + ["-j", "-f", "-"], input=json.dumps({"nftables": commands}), text=True,
                           check=True)
    return rules


def main():
    global SECONDS
    binary, pods, policies, changes, blocks, rounds, SECONDS = sys.argv[1], int(sys.argv[2]), \
        int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
    work = tempfile.mkdtemp(prefix="podnet-polbench-")
    path = os.path.join(work, "lab.yaml")
    with open(path, "w") as out:
        out.write(lab_file(pods, policies, True, False))
    started = time.monotonic()
    podnet(binary, "lab", "up", path, stdout=subprocess.DEVNULL)
    print(f"# lab up with {pods} filler pods and {policies} policies: {time.monotonic() - started:.1f} s", flush=True)
    # The agents' first commit of every element goes through nft (the table is created with
    # them, in one transaction); the measurements start once it is done.
    started = time.monotonic()
    settle()
    print(f"# agents' first commit done {time.monotonic() - started:.1f} s later", flush=True)
    server = pod_ip(binary, "server")

    # The prober runs throughout and reports every change of state with the start time of the
    # attempt that first showed it.
    prober = subprocess.Popen(["ip", "netns", "exec", CLIENT_NS, "python3", "-c", PROBE, server],
                              stdout=subprocess.PIPE, text=True)
    transitions = []
    threading.Thread(target=lambda: transitions.extend(
        (float(time_), state) for time_, state in (line.split() for line in prober.stdout)), daemon=True).start()
    delays = []
    for change in range(changes):
        closing = change % 2 == 0
        want = "closed" if closing else "open"
        before = time.time()
        apply(binary, path, lab_file(pods, policies, True, closing))
        published = published_at()
        deadline = time.time() + 10
        seen = None
        while seen is None and time.time() < deadline:
            seen = next((at for at, state in list(transitions) if state == want and at >= before), None)
            time.sleep(0.01)
        if seen is None:
            print(f"# change {change}: not enforced within 10 s", flush=True)
            continue
        delays.append(max(0.0, seen - published) * 1000)
    prober.kill()
    delays.sort()
    rss = (agent_rss("node1"), agent_rss("node2"))

    print()
    print(f"Time from publish to enforcement, {len(delays)} changes with {policies} policies and "
          f"{pods + 2} pods (probe: a connect every <= 10 ms):")
    if delays:
        print(f"  p50 {statistics.median(delays):.1f} ms   p99 {delays[min(len(delays) - 1, int(len(delays) * 0.99))]:.1f} ms"
              f"   max {delays[-1]:.1f} ms")
    print(f"  agent RSS: node1 {rss[0]:.1f} MB, node2 {rss[1]:.1f} MB", flush=True)
    print()

    def measure(setup):
        if setup != "detached":
            return data_path(server)
        saved = detach_hook(None)
        try:
            return data_path(server)
        finally:
            detach_hook(saved)

    def pair(peer, index, prepare=lambda setup: None):
        """One pair of blocks, "policies" first in even pairs and second in odd ones."""
        order = ("policies", peer) if index % 2 == 0 else (peer, "policies")
        figures = {}
        for setup in order:
            prepare(setup)
            figures[setup] = measure(setup)
        return figures["policies"], figures[peer]

    report("policies/detached", [pair("detached", index) for index in range(blocks)])
    print()

    def connects(setup):
        def run():
            return float(in_client("python3", "-c", CONNECT, server, "200", capture_output=True, text=True,
                                   check=True).stdout)
        if setup != "detached":
            return run()
        saved = detach_hook(None)
        try:
            return run()
        finally:
            detach_hook(saved)

    ratios = []
    for index in range(100):
        order = ("policies", "detached") if index % 2 == 0 else ("detached", "policies")
        figures = {setup: connects(setup) for setup in order}
        ratios.append(figures["policies"] / figures["detached"])
    median, low, high = quartiles(ratios)
    print(f"policies/detached, 100 pairs of 200 connects: median ratio {median:.3f} [{low:.3f}, {high:.3f}]")
    print()

    def reapply(setup):
        apply(binary, path, lab_file(pods, policies, setup == "policies", False))
        settle()

    report("policies/none", [pair("none", index, reapply) for index in range(rounds)])


if __name__ == "__main__":
    main()
