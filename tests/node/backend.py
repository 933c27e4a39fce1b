"""Small HTTP backends for tests/node: one thread per ADDRESS:PORT argument, each answering
every GET with its own address. Prints "ready" once all listen."""

import http.server
import sys
import threading


def serve(address, port):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = ("%s\n" % address).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    return server


def main():
    servers = []
    for arg in sys.argv[1:]:
        address, port = arg.rsplit(":", 1)
        servers.append(serve(address, int(port)))
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
