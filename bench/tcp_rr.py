#!/usr/bin/env python3
"""TCP request/response latency: one byte each way, N times over one connection.

    tcp_rr.py server PORT
    tcp_rr.py client HOST PORT COUNT      -> prints "p50_us p99_us"

Run the server in one namespace and the client in another; the same script serves every
setup compared, so its own overhead cancels out in the ratios.
"""
import socket
import sys
import time


def server(port):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(16)
    while True:
        connection, _ = listener.accept()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            data = connection.recv(1)
            if not data:
                break
            connection.sendall(data)
        connection.close()


def client(host, port, count):
    connection = socket.create_connection((host, port))
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(min(count // 10, 1000)):  # warm up
        connection.sendall(b"x")
        connection.recv(1)
    samples = []
    for _ in range(count):
        start = time.perf_counter_ns()
        connection.sendall(b"x")
        connection.recv(1)
        samples.append(time.perf_counter_ns() - start)
    connection.close()
    samples.sort()
    print(f"{samples[len(samples) // 2] / 1000:.1f} {samples[len(samples) * 99 // 100] / 1000:.1f}")


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]))
    else:
        client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
