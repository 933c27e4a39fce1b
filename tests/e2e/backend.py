#!/usr/bin/env python3
"""A pod for the end-to-end tests: HTTP, TCP echo or UDP echo on one address and port.

    backend.py http ADDRESS PORT NAME   answers every GET with "pod NAME\n" (+ request headers
                                         X-Forwarded-Proto / X-Forwarded-For / Host echoed back,
                                         and "count <header> N": how many times each came)
    backend.py tcp-echo ADDRESS PORT    echoes each connection's bytes back
    backend.py udp-echo ADDRESS PORT    echoes each datagram back

Runs until SIGTERM. Bounded: each connection times out after 10 s of silence.
"""

import http.server
import signal
import socket
import socketserver
import sys


def family_of(address):
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def serve_http(address, port, name):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10

        def do_GET(self):
            body = (f"pod {name}\n"
                    f"x-forwarded-proto {self.headers.get('X-Forwarded-Proto', '')}\n"
                    f"x-forwarded-for {self.headers.get('X-Forwarded-For', '')}\n"
                    f"host {self.headers.get('Host', '')}\n"
                    f"peer {self.client_address[0]}\n")
            # How many times each header came: a proxy must send each once.
            for header in ("Host", "X-Forwarded-For", "X-Forwarded-Proto"):
                body += f"count {header.lower()} {len(self.headers.get_all(header) or [])}\n"
            body = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        address_family = family_of(address)
        daemon_threads = True

    Server((address, port), Handler).serve_forever()


def serve_tcp_echo(address, port):
    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.settimeout(10)
            while True:
                data = self.request.recv(65536)
                if not data:
                    return
                self.request.sendall(data)

    class Server(socketserver.ThreadingTCPServer):
        address_family = family_of(address)
        allow_reuse_address = True
        daemon_threads = True

    Server((address, port), Handler).serve_forever()


def serve_udp_echo(address, port):
    sock = socket.socket(family_of(address), socket.SOCK_DGRAM)
    sock.bind((address, port))
    while True:
        data, peer = sock.recvfrom(65536)
        sock.sendto(data, peer)


def main(argv):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    kind, address, port = argv[0], argv[1], int(argv[2])
    if kind == "http":
        serve_http(address, port, argv[3] if len(argv) > 3 else address)
    elif kind == "tcp-echo":
        serve_tcp_echo(address, port)
    elif kind == "udp-echo":
        serve_udp_echo(address, port)
    else:
        print(f"backend.py: unknown kind {kind}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
