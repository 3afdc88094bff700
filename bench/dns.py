"""Cluster DNS: podnet dns against unbound and dnsmasq serving the same records, in one run.

Driven by bench/dns.sh (which builds podnet and installs the peers). Everything runs in a
network namespace of its own, on loopback:

1. The records: a one-node lab (its own CNI configuration: no agent, no DNS add-on) holding
   SIZE ClusterIP Services `sN.default.svc.cluster.local`; `podnet dns --lab` follows it as it
   follows a cluster. The peers get the same names as static data (unbound's local-data,
   dnsmasq's addn-hosts). An upstream (a `podnet dns` stub, authoritative for EXTERNAL names
   under bench.example.com, TTL one hour) stands for the internet; each server forwards other
   names to it and caches the answers.
2. The same core budget: each server runs on core 1 with one thread (podnet --workers 1,
   unbound num-threads 1, dnsmasq is single-threaded); dnsperf runs on core 0.
3. For each server: throughput (dnsperf as fast as answers come, CLIENTS clients, SECONDS
   seconds) and latency at a fixed rate (RATE queries/s, every query's latency from dnsperf
   -v: p50, p99), for the cluster names (in a shuffled order) and for the external names once
   cached (one pass through them first).
4. Memory: each server's RSS with 0 and each SIZE of records, and per 1,000 records.

    python3 bench/dns.py PODNET SIZES THROUGHPUT_SIZE
"""

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

LAB = "dnsbench"
NETNS = "dnsbench-servers"
EXTERNAL = 1000
CLIENTS = 20
OUTSTANDING = 500
SECONDS = 6
RATE = 20000
RATE_SECONDS = 4
SERVER_CORE = "1"
CLIENT_CORE = "0"
UPSTREAM = ("127.0.0.1", 5399)
PORTS = {"podnet": 5301, "unbound": 5302, "dnsmasq": 5303}
SERVICE_BASE = 10 << 24 | 96 << 16 | 1 << 8  # 10.96.1.0


def address(base, index):
    value = base + index
    return ".".join(str(value >> shift & 255) for shift in (24, 16, 8, 0))


def service_name(index):
    return f"s{index}.default.svc.cluster.local"


def external_name(index):
    return f"h{index}.bench.example.com"


def lab_file(count):
    cni = json.dumps({"cniVersion": "1.0.0", "name": "bench", "type": "bridge", "bridge": "cni0",
                      "ipam": {"type": "host-local", "subnet": "10.244.0.0/24"}})
    parts = [f"apiVersion: podnet.dev/v1alpha1\nkind: Lab\nmetadata: {{name: {LAB}}}\n"
             f"spec: {{nodes: 1, serviceCIDR: 10.96.0.0/12, cni: {cni}}}\n"]
    for index in range(count):
        parts.append(f"---\n{{apiVersion: v1, kind: Service, metadata: {{name: s{index}}}, "
                     f"spec: {{clusterIP: {address(SERVICE_BASE, index)}, ports: [{{port: 80}}]}}}}\n")
    return "".join(parts)


def in_netns(*command):
    return ["ip", "netns", "exec", NETNS, *command]


def pinned(core, *command):
    return in_netns("taskset", "-c", core, *command)


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def dig(port, name):
    result = subprocess.run(in_netns("dig", "+short", "+time=1", "+tries=1", "-p", str(port),
                                     "@127.0.0.1", name), capture_output=True, text=True)
    return result.stdout.strip()


def wait_answer(port, name, want, limit=600):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if dig(port, name) == want:
            return
        time.sleep(0.2)
    raise SystemExit(f"port {port}: {name} never answered {want}")


class Server:
    """One DNS server process in the namespace, stopped on exit."""

    def __init__(self, name, command, workdir):
        self.name = name
        self.log = open(os.path.join(workdir, f"{name}.log"), "w")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)

    def pid(self):
        # `ip netns exec` and `taskset` exec the server: the pid is the server's.
        return self.process.pid

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def podnet_server(podnet, workdir):
    return Server("podnet", pinned(
        SERVER_CORE, podnet, "dns", "--lab", LAB, "--listen", f"127.0.0.1:{PORTS['podnet']}",
        "--upstream", f"{UPSTREAM[0]}:{UPSTREAM[1]}", "--workers", "1", "--ttl", "30",
        "--health-address", "127.0.0.1:18080", "--ready-address", "127.0.0.1:18181",
        "--metrics-address", "127.0.0.1:19153"), workdir)


def unbound_server(count, workdir):
    path = os.path.join(workdir, "unbound.conf")
    with open(path, "w") as conf:
        conf.write(f"""server:
  interface: 127.0.0.1@{PORTS['unbound']}
  do-daemonize: no
  num-threads: 1
  username: ""
  chroot: ""
  directory: "{workdir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  module-config: "iterator"
  local-zone: "cluster.local." static
""")
        for index in range(count):
            conf.write(f'  local-data: "{service_name(index)}. 30 IN A {address(SERVICE_BASE, index)}"\n')
        conf.write(f"""forward-zone:
  name: "."
  forward-addr: {UPSTREAM[0]}@{UPSTREAM[1]}
""")
    return Server("unbound", pinned(SERVER_CORE, "unbound", "-d", "-c", path), workdir)


def dnsmasq_server(count, workdir):
    hosts = os.path.join(workdir, "hosts")
    with open(hosts, "w") as out:
        for index in range(count):
            out.write(f"{address(SERVICE_BASE, index)} {service_name(index)}\n")
    return Server("dnsmasq", pinned(
        SERVER_CORE, "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
        "--no-daemon", "--pid-file=", "--user=root", "--bind-interfaces",
        "--listen-address=127.0.0.1", f"--port={PORTS['dnsmasq']}",
        f"--server={UPSTREAM[0]}#{UPSTREAM[1]}", "--local=/cluster.local/",
        f"--addn-hosts={hosts}", "--local-ttl=30", "--cache-size=10000"), workdir)


def dnsperf(port, queries, *extra):
    command = pinned(CLIENT_CORE, "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", queries,
                     "-c", str(CLIENTS), *extra)
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(port, queries, pid):
    before = cpu_seconds(pid)
    output = dnsperf(port, queries, "-q", str(OUTSTANDING), "-l", str(SECONDS))
    busy = (cpu_seconds(pid) - before) / SECONDS
    qps = next(float(line.split()[-1]) for line in output.splitlines()
               if "Queries per second" in line)
    lost = next(line.split("(")[1].rstrip(")") for line in output.splitlines()
                if "Queries lost" in line)
    return qps, lost, busy


def latency(port, queries):
    output = dnsperf(port, queries, "-Q", str(RATE), "-l", str(RATE_SECONDS), "-v")
    samples = sorted(float(line.split()[-1]) for line in output.splitlines()
                     if line.startswith("> "))
    codes = {line.split()[1] for line in output.splitlines() if line.startswith("> ")}
    if not samples:
        return None
    pick = lambda fraction: samples[min(len(samples) - 1, int(fraction * len(samples)))] * 1000
    return pick(0.50), pick(0.99), sorted(codes)


def main():
    podnet, sizes, measured = sys.argv[1], [int(s) for s in sys.argv[2].split(",")], int(sys.argv[3])
    workdir = tempfile.mkdtemp(prefix="podnet-dnsbench-")
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    subprocess.run(in_netns("ip", "link", "set", "lo", "up"), check=True)
    servers = []
    try:
        statics = []
        for index in range(EXTERNAL):
            statics += ["--static-record", f"{external_name(index)}={address(198 << 24 | 51 << 16 | 100 << 8, index % 250)}"]
        upstream = Server("upstream", in_netns(
            "taskset", "-c", CLIENT_CORE, podnet, "dns", "--no-cluster", "--no-forward",
            "--listen", f"{UPSTREAM[0]}:{UPSTREAM[1]}", "--ttl", "3600", "--workers", "1",
            "--health-address", "127.0.0.1:28080", "--ready-address", "127.0.0.1:28181",
            "--metrics-address", "127.0.0.1:29153", *statics), workdir)
        servers.append(upstream)
        wait_answer(UPSTREAM[1], external_name(0), "198.51.100.0")

        external_queries = os.path.join(workdir, "external.txt")
        with open(external_queries, "w") as out:
            out.writelines(f"{external_name(index)} A\n" for index in range(EXTERNAL))

        lab = os.path.join(workdir, "lab.yaml")
        memory = {}
        speed = {}
        up = False
        for size in sorted(set(sizes + [0, measured])):
            with open(lab, "w") as out:
                out.write(lab_file(size))
            started = time.monotonic()
            verb = "apply" if up else "up"
            subprocess.run([podnet, "lab", verb, lab], check=True, stdout=subprocess.DEVNULL)
            up = True
            print(f"# lab {verb} with {size} services: {time.monotonic() - started:.1f} s", flush=True)
            last = size - 1
            for name, start in (("podnet", lambda: podnet_server(podnet, workdir)),
                                ("unbound", lambda: unbound_server(size, workdir)),
                                ("dnsmasq", lambda: dnsmasq_server(size, workdir))):
                started = time.monotonic()
                server = start()
                servers.append(server)
                port = PORTS[name]
                if size:
                    wait_answer(port, service_name(last), address(SERVICE_BASE, last))
                else:
                    wait_answer(port, external_name(1), "198.51.100.1")
                ready = time.monotonic() - started
                memory[(name, size)] = rss_mb(server.pid())
                print(f"# {name}: {size} records answered after {ready:.2f} s, RSS {memory[(name, size)]:.1f} MB",
                      flush=True)
                if size == measured:
                    cluster_queries = os.path.join(workdir, "cluster.txt")
                    names = list(range(size))
                    random.Random(7).shuffle(names)
                    with open(cluster_queries, "w") as out:
                        out.writelines(f"{service_name(index)} A\n" for index in names)
                    dnsperf(port, external_queries, "-n", "1")  # the cache warms
                    figures = {}
                    for kind, queries in (("cluster", cluster_queries), ("external", external_queries)):
                        figures[kind] = (throughput(port, queries, server.pid()), latency(port, queries))
                    speed[name] = figures
                    print(f"# {name}: {figures}", flush=True)
                server.stop()
                servers.remove(server)

        print()
        print(f"Throughput and latency, {measured} services (server on one core, dnsperf "
              f"-c {CLIENTS} -q {OUTSTANDING} for {SECONDS} s; latency at {RATE} q/s for {RATE_SECONDS} s)")
        print("(q/s per core: q/s divided by the server's CPU use, from its utime+stime over the run)")
        print(f"{'server':10} {'names':9} {'q/s':>9} {'cpu':>6} {'q/s/core':>9} {'lost':>8} {'p50 ms':>8} {'p99 ms':>8}  rcodes")
        per_core = {}
        for name, figures in speed.items():
            for kind, ((qps, lost, busy), lat) in figures.items():
                p50, p99, codes = lat if lat else (float("nan"), float("nan"), [])
                per_core[(name, kind)] = qps / busy if busy else float("nan")
                print(f"{name:10} {kind:9} {qps:9.0f} {busy:6.2f} {per_core[(name, kind)]:9.0f} {lost:>8} "
                      f"{p50:8.3f} {p99:8.3f}  {','.join(codes)}")
        for kind in ("cluster", "external"):
            print(f"podnet/{kind}: " + ", ".join(
                f"{speed['podnet'][kind][0][0] / speed[peer][kind][0][0]:.2f}x {peer} in q/s, "
                f"{per_core[('podnet', kind)] / per_core[(peer, kind)]:.2f}x per core"
                for peer in ("unbound", "dnsmasq")))
        print()
        print("Memory (RSS MB; per 1,000 records above the empty server)")
        print(f"{'server':10} " + " ".join(f"{size:>10}" for size in sorted(set(sizes + [0]))) + "   MB/1000")
        for name in PORTS:
            row = [memory[(name, size)] for size in sorted(set(sizes + [0]))]
            largest = max(sizes)
            per = (memory[(name, largest)] - memory[(name, 0)]) / largest * 1000 if largest else 0
            print(f"{name:10} " + " ".join(f"{value:10.1f}" for value in row) + f"   {per:7.2f}")
    finally:
        for server in servers:
            server.stop()
        subprocess.run([podnet, "lab", "down", "--lab", LAB], stdout=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "delete", NETNS])
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
