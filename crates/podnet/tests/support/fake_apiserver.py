"""A stand-in for the Kubernetes API server, for tests of podnet in cluster mode.

Serves Nodes, Namespaces, Pods, Services, EndpointSlices and NetworkPolicies the way the API server
does for a list-then-watch client (kube-rs's watcher): `GET /api/v1/nodes` (or `/api/v1/pods`,
`/api/v1/services`, `/apis/discovery.k8s.io/v1/endpointslices`,
`/apis/networking.k8s.io/v1/networkpolicies`) lists them with the collection's resourceVersion,
and the same path with `watch=true` streams ADDED/MODIFIED/DELETED events as JSON lines
(chunked). A test changes the cluster with `POST /podnet-test/event` and an event as the body
(the object's `kind` says its collection): the event is applied and sent to every open watch
of that collection.

    python3 fake_apiserver.py PORT OBJECTS.json     (OBJECTS.json: a JSON list of objects with `kind`)
"""

import json
import queue
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

# kind -> (collection path, apiVersion, list kind)
KINDS = {
    "Node": ("/api/v1/nodes", "v1", "NodeList"),
    "Namespace": ("/api/v1/namespaces", "v1", "NamespaceList"),
    "Pod": ("/api/v1/pods", "v1", "PodList"),
    "Service": ("/api/v1/services", "v1", "ServiceList"),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1/endpointslices", "discovery.k8s.io/v1", "EndpointSliceList"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1/networkpolicies", "networking.k8s.io/v1", "NetworkPolicyList"),
}
PATHS = {path: kind for kind, (path, _, _) in KINDS.items()}

lock = threading.Lock()
version = 1
objects = {kind: {} for kind in KINDS}
watchers = {kind: [] for kind in KINDS}


def key(obj):
    meta = obj["metadata"]
    return (meta.get("namespace", ""), meta["name"])


def stamp(obj):
    kind = obj["kind"]
    obj.setdefault("apiVersion", KINDS[kind][1])
    obj.setdefault("metadata", {})["resourceVersion"] = str(version)
    if kind not in ("Node", "Namespace"):
        obj["metadata"].setdefault("namespace", "default")
    return obj


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        kind = PATHS.get(url.path)
        if kind is None:
            self.send_json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                 "reason": "NotFound", "code": 404, "message": url.path})
            return
        if parse_qs(url.query).get("watch", ["false"])[0] in ("1", "true"):
            self.watch(kind)
            return
        with lock:
            body = {"kind": KINDS[kind][2], "apiVersion": KINDS[kind][1],
                    "metadata": {"resourceVersion": str(version)},
                    "items": list(objects[kind].values())}
        self.send_json(200, body)

    def watch(self, kind):
        events = queue.Queue()
        with lock:
            watchers[kind].append(events)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            while True:
                line = (json.dumps(events.get()) + "\n").encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
        except OSError:
            pass
        finally:
            with lock:
                watchers[kind].remove(events)

    def do_POST(self):
        global version
        length = int(self.headers.get("Content-Length", "0"))
        event = json.loads(self.rfile.read(length))
        with lock:
            version += 1
            obj = stamp(event["object"])
            kind = obj["kind"]
            if event["type"] == "DELETED":
                objects[kind].pop(key(obj), None)
            else:
                objects[kind][key(obj)] = obj
            for events in watchers[kind]:
                events.put({"type": event["type"], "object": obj})
        self.send_json(200, {"applied": event["type"], "watchers": len(watchers[kind])})


def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    with open(path) as file:
        for obj in json.load(file):
            obj = stamp(obj)
            objects[obj["kind"]][key(obj)] = obj
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
