"""A stand-in for the Kubernetes API server, for tests of podnet in cluster mode.

Serves Node objects the way the API server does for a list-then-watch client (kube-rs's
watcher): `GET /api/v1/nodes` lists them with the collection's resourceVersion, and the same
path with `watch=true` streams ADDED/MODIFIED/DELETED events as JSON lines (chunked). A test
changes the cluster with `POST /podnet-test/event` and an event as the body: the event is applied
to the list and sent to every open watch.

    python3 fake_apiserver.py PORT NODES.json     (NODES.json: a JSON list of Node objects)
"""

import json
import queue
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

lock = threading.Lock()
version = 1
nodes = {}
watchers = []


def stamp(obj):
    obj.setdefault("apiVersion", "v1")
    obj.setdefault("kind", "Node")
    obj.setdefault("metadata", {})["resourceVersion"] = str(version)
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
        if url.path != "/api/v1/nodes":
            self.send_json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                 "reason": "NotFound", "code": 404, "message": url.path})
            return
        if parse_qs(url.query).get("watch", ["false"])[0] in ("1", "true"):
            self.watch()
            return
        with lock:
            body = {"kind": "NodeList", "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(version)},
                    "items": list(nodes.values())}
        self.send_json(200, body)

    def watch(self):
        events = queue.Queue()
        with lock:
            watchers.append(events)
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
                watchers.remove(events)

    def do_POST(self):
        global version
        length = int(self.headers.get("Content-Length", "0"))
        event = json.loads(self.rfile.read(length))
        with lock:
            version += 1
            obj = stamp(event["object"])
            name = obj["metadata"]["name"]
            if event["type"] == "DELETED":
                nodes.pop(name, None)
            else:
                nodes[name] = obj
            for events in watchers:
                events.put({"type": event["type"], "object": obj})
        self.send_json(200, {"applied": event["type"], "watchers": len(watchers)})


def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    with open(path) as file:
        for node in json.load(file):
            nodes[node["metadata"]["name"]] = stamp(node)
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
