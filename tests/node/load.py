"""Steady HTTP load for tests/node: WORKERS threads each open a new connection per request to
URL until STOP_FILE exists or MAX_SECONDS pass (whichever first), then print one JSON object:
{"ok": n, "failed": n, "errors": {kind: n}, "backends": {body: n}, "seconds": s}."""

import collections
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse


def main():
    url, workers, stop_file, max_seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    target = urllib.parse.urlparse(url)
    lock = threading.Lock()
    counts = {"ok": 0, "failed": 0}
    errors = collections.Counter()
    backends = collections.Counter()
    start = time.time()
    stop = threading.Event()

    def worker():
        while not stop.is_set():
            try:
                connection = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=5)
                connection.request("GET", target.path or "/")
                response = connection.getresponse()
                body = response.read().decode(errors="replace").strip()
                connection.close()
                with lock:
                    if response.status == 200:
                        counts["ok"] += 1
                        backends[body] += 1
                    else:
                        counts["failed"] += 1
                        errors["HTTP %d" % response.status] += 1
            except Exception as error:  # every failure counts, whatever its kind
                with lock:
                    counts["failed"] += 1
                    errors[type(error).__name__ + ": " + str(error)[:80]] += 1
            time.sleep(0.002)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    while time.time() - start < max_seconds and not os.path.exists(stop_file):
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    print(json.dumps({"ok": counts["ok"], "failed": counts["failed"], "errors": dict(errors),
                      "backends": dict(backends), "seconds": round(time.time() - start, 2)}), flush=True)


if __name__ == "__main__":
    main()
