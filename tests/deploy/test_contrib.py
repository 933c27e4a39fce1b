"""contrib/: the systemd units, the cron job and the logrotate snippet for nodes driven without
containers. The units pass `systemd-analyze verify` (no warning at all) in a root that has them
installed where their comments say; the cron line is one a cron daemon takes; every file names
only settings actor.sh reads."""

import os
import re
import shutil
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("K8SLB_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
CONTRIB = os.path.join(SOURCE_DIR, "contrib")
UNITS = ["k8slb-actor.service", "k8slb-node-once.service", "k8slb-node-once.timer"]


def actor_settings():
    """The variables actor.sh documents in its header."""
    with open(os.path.join(SOURCE_DIR, "scripts", "actor.sh")) as f:
        header = "".join(line for line in f if line.startswith("#"))
    names = re.findall(r"^#   ([A-Z_]+(?:, [A-Z_]+)*)\s", header, re.M)
    return {name for group in names for name in group.split(", ")}


@unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze not installed")
class SystemdUnitTest(unittest.TestCase):
    def test_units_verify_without_warnings(self):
        with tempfile.TemporaryDirectory(prefix="k8slb-contrib-") as root:
            # The root as an install leaves it: systemd's own units, ours, the script, the settings.
            shutil.copytree("/usr/lib/systemd/system", os.path.join(root, "usr/lib/systemd/system"), symlinks=True)
            units = os.path.join(root, "etc/systemd/system")
            os.makedirs(units)
            for unit in UNITS:
                shutil.copy(os.path.join(CONTRIB, "systemd", unit), units)
            os.makedirs(os.path.join(root, "usr/local/bin"))
            shutil.copy(os.path.join(SOURCE_DIR, "scripts", "actor.sh"), os.path.join(root, "usr/local/bin"))
            os.makedirs(os.path.join(root, "etc/default"))
            shutil.copy(os.path.join(CONTRIB, "k8slb.env"), os.path.join(root, "etc/default/k8slb"))
            result = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}"]
                                    + [os.path.join("/etc/systemd/system", unit) for unit in UNITS],
                                    capture_output=True, text=True, timeout=60, cwd=root)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(result.stdout + result.stderr, "", "systemd-analyze warned")

    def test_units_use_the_settings_file_and_the_documented_modes(self):
        for unit in UNITS[:2]:
            with self.subTest(unit=unit), open(os.path.join(CONTRIB, "systemd", unit)) as f:
                text = f.read()
                self.assertIn("EnvironmentFile=/etc/default/k8slb\n", text)
                mode = re.search(r"^ExecStart=/usr/local/bin/actor.sh (\w+)$", text, re.M).group(1)
                self.assertIn(mode, ("run", "once"))
        with open(os.path.join(CONTRIB, "systemd", "k8slb-node-once.service")) as f:
            # The daemons a pass starts must outlive it.
            self.assertIn("KillMode=process\n", f.read())

    def test_man_pages_named_by_the_units_exist(self):
        for unit in UNITS:
            with open(os.path.join(CONTRIB, "systemd", unit)) as f:
                for page, section in re.findall(r"man:([\w-]+)\((\d)\)", f.read()):
                    self.assertTrue(os.path.exists(os.path.join(SOURCE_DIR, "man", f"{page}.{section}")), page)


class SettingsFileTest(unittest.TestCase):
    def test_every_setting_is_one_actor_sh_reads(self):
        documented = actor_settings() | {"KUBECONFIG"}
        with open(os.path.join(CONTRIB, "k8slb.env")) as f:
            names = {line.split("=", 1)[0] for line in f if re.match(r"^[A-Z_]+=", line)}
        self.assertTrue(names)
        self.assertLessEqual(names, documented, "settings actor.sh does not read")


class CronTest(unittest.TestCase):
    def test_cron_d_line(self):
        with open(os.path.join(CONTRIB, "cron", "k8slb")) as f:
            jobs = [line for line in f if line.strip() and not line.startswith("#") and "=" not in line.split()[0]]
        self.assertEqual(len(jobs), 1)
        fields = jobs[0].split(None, 6)
        self.assertEqual(fields[:5], ["*"] * 5)
        self.assertEqual(fields[5], "root", "/etc/cron.d lines name the user")
        self.assertIn("/usr/local/bin/actor.sh once", fields[6])
        self.assertIn(". /etc/default/k8slb", fields[6])


@unittest.skipUnless(shutil.which("logrotate"), "logrotate not installed")
class LogrotateTest(unittest.TestCase):
    def test_logrotate_accepts_it(self):
        with tempfile.TemporaryDirectory() as state:
            result = subprocess.run(["logrotate", "--debug", "--state", os.path.join(state, "status"),
                                     os.path.join(CONTRIB, "logrotate", "k8slb")],
                                    capture_output=True, text=True, timeout=30)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertNotIn("error", result.stderr.lower())


if __name__ == "__main__":
    unittest.main()
