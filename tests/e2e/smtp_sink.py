#!/usr/bin/env python3
"""A minimal SMTP responder for the tests: accepts every message and stores it in a directory.

    smtp_sink.py ADDRESS PORT DIR

Speaks just enough SMTP (HELO/EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) for keepalived's
notification mail. Each message is written to DIR/<n>.eml with its envelope in the first lines.
Runs until SIGTERM; each session times out after 10 s of silence.
"""

import itertools
import os
import signal
import socket
import socketserver
import sys
import threading

_counter = itertools.count(1)
_lock = threading.Lock()


def make_handler(directory):
    class Handler(socketserver.StreamRequestHandler):
        timeout = 10

        def reply(self, line):
            self.wfile.write((line + "\r\n").encode())
            self.wfile.flush()

        def handle(self):
            self.reply("220 k8slb-test-sink ESMTP")
            sender, recipients = "", []
            while True:
                raw = self.rfile.readline(4096)
                if not raw:
                    return
                command = raw.decode(errors="replace").strip()
                verb = command[:4].upper()
                if verb in ("HELO", "EHLO"):
                    self.reply("250 k8slb-test-sink")
                elif verb == "MAIL":
                    sender, recipients = command[10:].strip(), []
                    self.reply("250 OK")
                elif verb == "RCPT":
                    recipients.append(command[8:].strip())
                    self.reply("250 OK")
                elif verb == "DATA":
                    self.reply("354 End data with <CR><LF>.<CR><LF>")
                    lines = []
                    for _ in range(100000):
                        line = self.rfile.readline(65536)
                        if not line or line.rstrip(b"\r\n") == b".":
                            break
                        lines.append(line.decode(errors="replace"))
                    with _lock:
                        number = next(_counter)
                    path = os.path.join(directory, f"{os.getpid()}-{number}.eml")
                    with open(path + ".tmp", "w") as message:
                        message.write(f"X-Envelope-From: {sender}\n")
                        message.write(f"X-Envelope-To: {', '.join(recipients)}\n")
                        message.write("".join(lines))
                    os.rename(path + ".tmp", path)
                    self.reply("250 OK queued")
                elif verb in ("RSET", "NOOP"):
                    self.reply("250 OK")
                elif verb == "QUIT":
                    self.reply("221 Bye")
                    return
                else:
                    self.reply("502 Command not implemented")

    return Handler


def main(argv):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    address, port, directory = argv[0], int(argv[1]), argv[2]
    os.makedirs(directory, exist_ok=True)

    class Server(socketserver.ThreadingTCPServer):
        address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        allow_reuse_address = True
        daemon_threads = True

    Server((address, port), make_handler(directory)).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
