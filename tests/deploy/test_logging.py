"""One log format, and LOG_LEVEL, for the tools and the entrypoints (issue 10, "Logs").

Every line a pod's log gets from actor.sh, watcher.sh and the tools they start is logfmt:
  time=2026-11-28T10:03:20.123Z level=info component=actor.sh msg="..."
LOG_LEVEL=error keeps only errors; debug adds debug lines. Data on stdout is not touched."""

import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pod  # noqa: E402
from test_actor_script import WHY_NOT, actor_log  # noqa: E402

APPLY = os.path.join(pod.BINARY_DIR, "k8slb-apply")
LINE = re.compile(r'^time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=(error|warn|info|debug) '
                  r'component=(\S+) msg=("(?:[^"\\]|\\.)*"|\S+)$')
EVENT_LINE = json.dumps({"actions": {"haproxy": "none"}, "problems": [], "events": [{
    "apiVersion": "v1", "kind": "Event", "metadata": {"namespace": "default"},
    "involvedObject": {"kind": "Service", "namespace": "default", "name": "web", "uid": "u1"},
    "reason": "NoInterface", "message": "pools.default: interface: no interface named 'eth9'",
    "type": "Warning"}]})


def levels(stderr):
    """The level of each logfmt line; fails on a line in another format."""
    found = []
    for line in stderr.splitlines():
        match = LINE.match(line)
        if not match:
            raise AssertionError(f"not a logfmt line: {line!r}\n{stderr}")
        found.append((match.group(1), match.group(2)))
    return found


class ToolLogTest(unittest.TestCase):
    def events(self, level, fmt="logfmt"):
        env = dict(os.environ, LOG_LEVEL=level, LOG_FORMAT=fmt)
        return subprocess.run([APPLY, "events", "--dry-run"], input=EVENT_LINE + "\nnot json\n5\n", env=env,
                              capture_output=True, text=True, timeout=20)

    def test_levels(self):
        # (LOG_LEVEL, the levels printed): an error (the bad line), an info (the Event), a debug.
        cases = [("error", {"error"}), ("warn", {"error"}), ("info", {"error", "info"}),
                 ("debug", {"error", "info", "debug"}), ("DEBUG", {"error", "info", "debug"})]
        for level, expected in cases:
            with self.subTest(LOG_LEVEL=level):
                result = self.events(level)
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertEqual({lvl for lvl, _ in levels(result.stderr)}, expected, result.stderr)
                self.assertEqual({c for _, c in levels(result.stderr)}, {"k8slb-apply"})
                # stdout is data: the request (dry run) and the line without its Events.
                out = [json.loads(line) for line in result.stdout.splitlines()]
                self.assertIn({"actions": {"haproxy": "none"}, "problems": []}, out)

    def test_text_format_and_an_unknown_level(self):
        result = self.events("loud", fmt="text")
        self.assertIn("k8slb-apply: warning: LOG_LEVEL: 'loud' is not error, warn, info or debug; using info",
                      result.stderr)
        self.assertIn("k8slb-apply: error: stdin: document 2: malformed JSON", result.stderr)
        self.assertIn("k8slb-apply: error: stdin: document 3: expected an object", result.stderr)
        self.assertIn("k8slb-apply: default/web: Event Warning NoInterface", result.stderr)

    def test_values_are_quoted(self):
        result = self.events("info")
        info = [line for line in result.stderr.splitlines() if "level=info" in line][0]
        self.assertIn('msg="default/web: Event Warning NoInterface: pools.default: interface: '
                      "no interface named 'eth9'\"", info)


@unittest.skipIf(WHY_NOT, f"pods cannot run here: {WHY_NOT}")
class EntrypointLogTest(unittest.TestCase):
    def test_actor_log_levels(self):
        # No kubeconfig: the actor starts, k8slb-watch fails (error), the actor restarts its
        # reader (info); debug adds the tools' command lines.
        cases = [("error", {"error"}, {"info", "debug", "warn"}),
                 ("info", {"error", "info"}, {"debug"}),
                 ("debug", {"error", "info", "debug"}, set())]
        for level, present, absent in cases:
            with self.subTest(LOG_LEVEL=level), tempfile.TemporaryDirectory(prefix="k8slb-log-") as workdir:
                log = actor_log("haproxy", workdir, env={"LOG_LEVEL": level})
                found = levels(log)
                seen = {lvl for lvl, _ in found}
                self.assertTrue(present <= seen, f"{present} not all in {seen}:\n{log}")
                self.assertFalse(seen & absent, log)
                components = {c for _, c in found}
                self.assertIn("k8slb-watch", components, log)
                self.assertEqual("actor.sh" in components, level != "error", log)  # its lines are info
                # Its last words, after it stopped the pipeline on SIGTERM, still reach the log.
                stopped = re.search(r'component=actor\.sh msg="?stopped"?$', log, re.M) is not None
                self.assertEqual(stopped, level != "error", log)

    def test_watcher_error_is_logfmt(self):
        env = dict(os.environ, CONFIG_MAP="not a name", K8SLB_BIN=pod.BINARY_DIR)
        result = subprocess.run(["bash", os.path.join(pod.SOURCE_DIR, "scripts", "watcher.sh")], env=env,
                                capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(levels(result.stderr), [("error", "watcher.sh")])
        self.assertIn('msg="CONFIG_MAP=not a name: expected namespace/name', result.stderr)


if __name__ == "__main__":
    unittest.main()
