"""Fault drills: two watcher replicas (scripts/watcher.sh, as the Deployment runs it) and 300
Services in IPv4 and IPv6 pools, on the API simulator, through leader kills, error storms,
dropped watches, compaction and a simulator restart.

What must hold, from the simulator's audit log of every value status.loadBalancer.ingress
took (so an IP held twice or moved counts however briefly it lasted): no IP held by two
Services at once, no Service's IP ever replaced by another, and every Service assigned at the
end. New Services keep getting IPs during the storms: the longest wait is printed, not
asserted (timing is never asserted)."""

import ipaddress
import time
import unittest

from harness import ClusterTestCase, wait_until

DRILL_POOLS = {
    "pools": {
        "default": {"network": "192.0.2.0/24", "range": "192.0.2.1-192.0.2.254"},
        "second": {"network": "198.51.100.0/24", "range": "198.51.100.1-198.51.100.254"},
        "six": {"network": "2001:db8:6::/64", "range": "2001:db8:6::1-2001:db8:6::ffff"},
    }
}
SERVICES = 300
STORM_SECONDS = 20


def replay(audit):
    """(duplicates, moves) found by replaying the audit log: an IP given to a Service while
    another holds it; a Service (by uid) that ever gets a different IP of a family it held."""
    holder = {}   # ip -> uid holding it now
    first = {}    # (uid, family) -> the first IP it held
    duplicates, moves = [], []
    for entry in audit:
        uid, key = entry["uid"], f"{entry['namespace']}/{entry['name']}"
        for ip in entry["previous"]:
            if holder.get(ip) == uid:
                del holder[ip]
        for ip in entry["ips"]:
            other = holder.get(ip)
            if other is not None and other != uid:
                duplicates.append(f"{ip}: {key} while {other} holds it (seq {entry['seq']})")
            holder[ip] = uid
            family = ipaddress.ip_address(ip).version
            was = first.setdefault((uid, family), ip)
            if was != ip:
                moves.append(f"{key}: {was} -> {ip} (seq {entry['seq']})")
    return duplicates, moves


class DrillTest(ClusterTestCase):
    pools = DRILL_POOLS
    keep_state = True
    ip_families = "IPv4,IPv6"  # the "six" Services ask for ipFamilies: [IPv6]

    def make_service(self, name, kind):
        spec = {"type": "LoadBalancer", "selector": {"app": name},
                "ports": [{"name": "p", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
        annotations = {}
        if kind == "second":
            annotations["loadbalancer/pool"] = "second"
        elif kind == "six":
            annotations["loadbalancer/pool"] = "six"
            spec["ipFamilies"] = ["IPv6"]
        self.sim.must("POST", "/api/v1/namespaces/default/services", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": spec})
        self.created[name] = time.monotonic()

    def kind_of(self, i):
        return ("default", "second", "six")[i % 3]

    def unassigned(self):
        ips = self.all_ips()
        return sorted(key for key in ips if not ips[key])

    def check_waits(self, names, waits=None):
        """Polls until every named Service has an IP (or 60 s); returns the longest wait.
        `waits`: those already seen with an IP, and after how long."""
        waits = dict(waits or {})
        deadline = time.monotonic() + 60
        while len(waits) < len(names) and time.monotonic() < deadline:
            ips = self.all_ips()
            for name in names:
                if name not in waits and ips.get(f"default/{name}"):
                    waits[name] = time.monotonic() - self.created[name]
            time.sleep(0.2)
        self.assertEqual(sorted(waits), sorted(names), "Services left without an IP")
        return max(waits.values())

    def storm(self, label, rate):
        """A rate fault for STORM_SECONDS on every request of the watchers, one new Service
        each second meanwhile."""
        self.sim.fault(rate=dict(rate, seconds=STORM_SECONDS))
        names = []
        started = time.monotonic()
        first_waits = {}
        while time.monotonic() - started < STORM_SECONDS:
            name = f"{label}-{len(names)}"
            self.make_service(name, self.kind_of(len(names)))
            names.append(name)
            next_one = time.monotonic() + 1
            while time.monotonic() < next_one:  # poll (exempt) until the next Service is due
                ips = self.all_ips()
                for other in names:
                    if other not in first_waits and ips.get(f"default/{other}"):
                        first_waits[other] = time.monotonic() - self.created[other]
                time.sleep(0.2)
        during = len(first_waits)
        longest = self.check_waits(names, first_waits)
        injected = self.sim.stats()["faults_injected"]
        self.figures.append(f"{label}: {len(names)} new Services, {during} got an IP during the storm; "
                            f"longest wait for an IP {longest:.1f} s; faults injected so far {injected}")
        return names

    def test_drills(self):
        self.created = {}
        self.figures = []
        self.start_watcher("replica-0")
        self.start_watcher("replica-1")
        for i in range(SERVICES):
            self.make_service(f"svc-{i}", self.kind_of(i))
        wait_until(lambda: not self.unassigned(), 120, "all 300 Services to get an IP", interval=0.5)
        self.figures.append(f"start: {SERVICES} Services assigned in "
                            f"{time.monotonic() - self.created['svc-0']:.1f} s")

        # Leader SIGKILLed 10 times; the Deployment starts a replacement replica each time.
        replica = 2
        kill_waits = []
        for kill in range(10):
            holder = wait_until(self.holder, 30, "a leader")
            leader = next(w for w in self.watchers if w.identity == holder and w.process.poll() is None)
            leader.kill()
            self.watchers.remove(leader)
            self.start_watcher(f"replica-{replica}")
            replica += 1
            name = f"after-kill-{kill}"
            self.make_service(name, self.kind_of(kill))
            kill_waits.append(self.check_waits([name]))
        self.figures.append(f"10 leader kills: longest wait for a new Service's IP {max(kill_waits):.1f} s")

        self.storm("storm-500", {"percent": 50, "status": 500})
        self.storm("storm-429", {"percent": 90, "status": 429, "retry_after": 1})

        for label, fault in (("watches-dropped", {"drop_watches": True}),
                             ("compaction", {"compact": True, "drop_watches": True})):
            self.sim.fault(**fault)
            names = [f"{label}-{i}" for i in range(5)]
            for i, name in enumerate(names):
                self.make_service(name, self.kind_of(i))
            self.figures.append(f"{label}: longest wait for an IP {self.check_waits(names):.1f} s")

        # The simulator crashes (SIGKILL) and comes back with its state, like an API server
        # restarted on the same etcd.
        self.restart_sim(kill=True)
        names = [f"restart-{i}" for i in range(5)]
        for i, name in enumerate(names):
            self.make_service(name, self.kind_of(i))
        self.figures.append(f"simulator restart: longest wait for an IP {self.check_waits(names):.1f} s")

        # The end: every Service assigned, one IP of its family, and the audit log clean.
        self.assertEqual(self.unassigned(), [])
        for key, ips in self.all_ips().items():
            self.assertEqual(len(ips), 1, key)
        self.assert_no_duplicate_ip()
        audit = self.sim.audit()
        duplicates, moves = replay(audit)
        self.figures.append(f"audit: {len(audit)} status changes, {len(duplicates)} duplicate IPs, "
                            f"{len(moves)} moved IPs")
        print("\n" + "\n".join(self.figures))
        self.assertEqual(duplicates, [])
        self.assertEqual(moves, [])

    def test_replay_finds_duplicates_and_moves(self):
        # The checker itself: it must see what it is there to see.
        def entry(seq, name, ips, previous=()):
            return {"seq": seq, "namespace": "default", "name": name, "uid": f"uid-{name}",
                    "ips": list(ips), "previous": list(previous)}
        cases = [
            ("clean", [entry(0, "a", ["192.0.2.1"]), entry(1, "b", ["192.0.2.2"])], 0, 0),
            ("released, then given to another", [entry(0, "a", ["192.0.2.1"]),
                                                 entry(1, "a", [], ["192.0.2.1"]),
                                                 entry(2, "b", ["192.0.2.1"])], 0, 0),
            ("held twice", [entry(0, "a", ["192.0.2.1"]), entry(1, "b", ["192.0.2.1"])], 1, 0),
            ("moved", [entry(0, "a", ["192.0.2.1"]), entry(1, "a", ["192.0.2.9"], ["192.0.2.1"])], 0, 1),
            ("cleared and reassigned another", [entry(0, "a", ["2001:db8::1"]),
                                                entry(1, "a", [], ["2001:db8::1"]),
                                                entry(2, "a", ["2001:db8::2"])], 0, 1),
        ]
        for description, audit, duplicates, moves in cases:
            with self.subTest(description):
                found = replay(audit)
                self.assertEqual((len(found[0]), len(found[1])), (duplicates, moves), found)


if __name__ == "__main__":
    unittest.main()
