"""Protocol tests of the Kubernetes API simulator, the way a client sees it over HTTPS.

Each test class starts its own simulator (in a temporary directory) and works in namespaces
it creates, so the tests do not see each other's objects.
"""

import http.client
import ipaddress
import json
import os
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kubesim_client  # noqa: E402


def service(name, port=80, labels=None, **spec):
    body = {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": dict({"type": "LoadBalancer", "selector": {"app": name},
                          "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}, **spec)}
    return body


def configmap(name, labels=None, data=None):
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels or {}}, "data": data or {"k": "v"}}


class SimulatorTestCase(unittest.TestCase):
    sim_options = {}

    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="kubesim-protocol-")
        cls.sim = kubesim_client.start(cls.workdir, **cls.sim_options)

    @classmethod
    def tearDownClass(cls):
        cls.sim.stop()
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def setUp(self):
        self.sim.reset_faults()
        self.ns = self.id().rsplit(".", 1)[-1].replace("_", "-")[:60].strip("-")
        self.sim.must("POST", "/api/v1/namespaces", {"metadata": {"name": self.ns}})

    def path(self, resource, name=None, sub=None, query=None, group=None):
        base = f"/apis/{group}" if group else "/api/v1"
        p = f"{base}/namespaces/{self.ns}/{resource}"
        if name:
            p += f"/{name}"
        if sub:
            p += f"/{sub}"
        if query:
            p += "?" + urllib.parse.urlencode(query)
        return p

    def create(self, resource, body, group=None):
        return self.sim.must("POST", self.path(resource, group=group), body, expect=(201,))

    def list_rv(self, resource):
        return self.sim.must("GET", self.path(resource))["metadata"]["resourceVersion"]


class AuthAndDiscoveryTest(SimulatorTestCase):
    def test_requests_without_the_token_are_unauthorized(self):
        cases = [("no header", ""), ("wrong token", "not-the-token")]
        for description, token in cases:
            with self.subTest(description):
                resp = self.sim.request("GET", "/api/v1/services", token=token)
                self.assertEqual(resp.status, 401)
                self.assertEqual(resp.body["kind"], "Status")
                self.assertEqual(resp.body["reason"], "Unauthorized")
                self.assertEqual(resp.body["code"], 401)
        self.assertEqual(self.sim.request("GET", "/_sim/stats", token="x").status, 401)

    def test_tls_only(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.sim.port, timeout=10)
        with self.assertRaises((http.client.HTTPException, ConnectionError, OSError)):
            conn.request("GET", "/version")
            resp = conn.getresponse()
            if resp.status >= 400:
                raise ConnectionError(f"HTTP {resp.status}")
        conn.close()

    def test_discovery(self):
        core = self.sim.must("GET", "/api/v1")
        by_name = {r["name"]: r for r in core["resources"]}
        self.assertEqual(core["kind"], "APIResourceList")
        self.assertEqual(by_name["services"]["shortNames"], ["svc"])
        self.assertEqual(by_name["services"]["kind"], "Service")
        self.assertTrue(by_name["services"]["namespaced"])
        self.assertFalse(by_name["nodes"]["namespaced"])
        self.assertIn("watch", by_name["services"]["verbs"])
        self.assertEqual(sorted(by_name["services/status"]["verbs"]), ["get", "patch", "update"])
        self.assertIn("nodes/status", by_name)
        groups = self.sim.must("GET", "/apis")
        versions = {v["groupVersion"] for g in groups["groups"] for v in g["versions"]}
        for gv in ("discovery.k8s.io/v1", "coordination.k8s.io/v1", "events.k8s.io/v1"):
            self.assertIn(gv, versions)
            self.assertEqual(self.sim.must("GET", f"/apis/{gv}")["groupVersion"], gv)
        self.assertEqual(self.sim.must("GET", "/version")["major"], "1")
        v2 = self.sim.must("GET", "/openapi/v2")["definitions"]
        self.assertEqual(v2["io.k8s.api.core.v1.Service"]["x-kubernetes-group-version-kind"],
                         [{"group": "", "kind": "Service", "version": "v1"}])
        self.assertEqual(v2["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"]["items"],
                         {"$ref": "#/definitions/io.k8s.api.core.v1.ServicePort"})
        proto = self.sim.request("GET", "/openapi/v2", headers={
            "Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"})
        self.assertEqual(proto.headers["Content-Type"],
                         "application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
        for path in ("/no/such/path", "/api/v1/nosuchresources"):
            with self.subTest(path):
                self.assertEqual(self.sim.request("GET", path).status, 404)

    def test_protobuf_first_in_accept_is_answered_with_json(self):
        resp = self.sim.request("GET", "/api/v1/namespaces/default", headers={
            "Accept": "application/vnd.kubernetes.protobuf, application/json"})
        self.assertEqual(resp.status, 200)
        self.assertTrue(resp.headers["Content-Type"].startswith("application/json"))
        self.assertEqual(resp.body["kind"], "Namespace")


class CrudTest(SimulatorTestCase):
    def test_create_get_delete_and_their_errors(self):
        created = self.create("services", service("web"))
        meta = created["metadata"]
        self.assertEqual((meta["name"], meta["namespace"], meta["generation"]),
                         ("web", self.ns, 1))
        for key in ("uid", "creationTimestamp", "resourceVersion"):
            self.assertTrue(meta.get(key), key)
        self.assertIsInstance(meta["resourceVersion"], str)
        self.assertEqual(created["spec"]["ipFamilies"], ["IPv4"])
        self.assertEqual(created["spec"]["ipFamilyPolicy"], "SingleStack")
        self.assertEqual(created["spec"]["ports"][0]["targetPort"], 80)
        self.assertEqual(self.sim.must("GET", self.path("services", "web")), created)

        again = self.sim.request("POST", self.path("services"), service("web"))
        self.assertEqual((again.status, again.body["reason"]), (409, "AlreadyExists"))
        self.assertEqual(again.body["details"], {"name": "web", "kind": "services"})

        deleted = self.sim.must("DELETE", self.path("services", "web"))
        self.assertEqual(deleted["metadata"]["uid"], meta["uid"])
        self.assertGreater(int(deleted["metadata"]["resourceVersion"]),
                           int(meta["resourceVersion"]))
        for method in ("GET", "DELETE"):
            with self.subTest(method):
                resp = self.sim.request(method, self.path("services", "web"))
                self.assertEqual(resp.status, 404)
                self.assertEqual(resp.body["reason"], "NotFound")
                self.assertEqual(resp.body["message"], 'services "web" not found')
                self.assertEqual(resp.body["details"], {"name": "web", "kind": "services"})

    def test_resource_versions_are_one_global_counter(self):
        a = self.create("configmaps", configmap("a"))
        b = self.create("services", service("b"))
        lease = self.create("leases", {"metadata": {"name": "c"}, "spec": {}},
                            group="coordination.k8s.io/v1")
        rvs = [int(o["metadata"]["resourceVersion"]) for o in (a, b, lease)]
        self.assertEqual(rvs, sorted(rvs))
        self.assertEqual(len(set(rvs)), 3)

    def test_generate_name_and_events(self):
        event = {"metadata": {"generateName": "web."},
                 "involvedObject": {"kind": "Service", "namespace": self.ns, "name": "web"},
                 "reason": "IPAllocated", "message": "198.51.100.7", "type": "Normal",
                 "count": 1}
        first = self.create("events", event)
        second = self.create("events", event)
        for e in (first, second):
            self.assertTrue(e["metadata"]["name"].startswith("web."))
        self.assertNotEqual(first["metadata"]["name"], second["metadata"]["name"])
        bumped = self.sim.must("PATCH", self.path("events", first["metadata"]["name"]),
                               {"count": 2, "lastTimestamp": "2025-01-01T00:00:00Z"},
                               "application/strategic-merge-patch+json")
        self.assertEqual(bumped["count"], 2)
        found = self.sim.must("GET", self.path("events", query={
            "fieldSelector": "involvedObject.name=web,reason=IPAllocated"}))
        self.assertEqual(len(found["items"]), 2)
        elsewhere = dict(event, involvedObject=dict(event["involvedObject"], namespace="other"))
        resp = self.sim.request("POST", self.path("events"), elsewhere)
        self.assertEqual(resp.status, 422)
        self.assertIn("involvedObject.namespace", resp.body["message"])

    def test_validation_errors_name_the_field(self):
        cases = [
            ("no ports", service("a", ports=[]), "spec.ports", "Required value"),
            ("port 0", service("b", port=0), "spec.ports[0].port", "Invalid value: 0"),
            ("bad type", service("c", type="Magic"), "spec.type", 'Unsupported value: "Magic"'),
            ("bad name", service("Bad_Name"), "metadata.name", "Invalid value"),
            ("bad lb ip", service("d", loadBalancerIP="1.2.3"), "spec.loadBalancerIP",
             "Invalid value"),
            ("bad label", service("e", labels={"a": "not ok!"}), "metadata.labels",
             "Invalid value"),
        ]
        for description, body, field, text in cases:
            with self.subTest(description):
                resp = self.sim.request("POST", self.path("services"), body)
                self.assertEqual(resp.status, 422, resp.body)
                self.assertEqual(resp.body["reason"], "Invalid")
                self.assertIn(f"{field}: {text}", resp.body["message"])
                self.assertIn(field, [c["field"] for c in resp.body["details"]["causes"]])

    def test_unknown_fields_are_dropped_or_rejected_when_strict(self):
        body = service("web")
        body["spec"]["loadbalancerIP"] = "203.0.113.5"  # a typo: the field is loadBalancerIP
        body["spec"]["ports"][0]["nodeport"] = 31000
        strict = self.sim.request("POST", self.path("services",
                                                    query={"fieldValidation": "Strict"}), body)
        self.assertEqual(strict.status, 400)
        self.assertIn('unknown field "spec.loadbalancerIP"', strict.body["message"])
        self.assertIn('unknown field "spec.ports[0].nodeport"', strict.body["message"])
        created = self.create("services", body)
        self.assertNotIn("loadbalancerIP", created["spec"])
        self.assertNotIn("nodeport", created["spec"]["ports"][0])
        patched = self.sim.must("PATCH", self.path("services", "web", "status"), {
            "status": {"loadBalancer": {"ingres": [{"ip": "203.0.113.5"}]}}},
            "application/merge-patch+json")
        self.assertEqual(patched["status"], {"loadBalancer": {}})

    def test_unknown_fields_are_warned_about_by_default(self):
        body = service("warned")
        body["spec"]["loadbalancerIP"] = "203.0.113.5"
        for validation, warned in (("", True), ("Warn", True), ("Ignore", False)):
            with self.subTest(validation or "default"):
                query = {"fieldValidation": validation} if validation else None
                resp = self.sim.request("POST", self.path("services", query=query), body)
                self.assertEqual(resp.status, 201, resp.body)
                self.assertNotIn("loadbalancerIP", resp.body["spec"])
                self.assertEqual(resp.headers.get("Warning"),
                                 '299 - "unknown field \\"spec.loadbalancerIP\\""' if warned
                                 else None)
                self.sim.must("DELETE", self.path("services", "warned"))

    def test_missing_namespace_and_mismatched_namespace(self):
        resp = self.sim.request("POST", "/api/v1/namespaces/nope/configmaps", configmap("a"))
        self.assertEqual((resp.status, resp.body["message"]), (404,
                                                               'namespaces "nope" not found'))
        body = configmap("a")
        body["metadata"]["namespace"] = "default"
        self.assertEqual(self.sim.request("POST", self.path("configmaps"), body).status, 400)

    def test_list_items_carry_no_kind_like_the_real_server(self):
        self.create("configmaps", configmap("a"))
        listing = self.sim.must("GET", self.path("configmaps"))
        self.assertEqual((listing["kind"], listing["apiVersion"]), ("ConfigMapList", "v1"))
        self.assertNotIn("kind", listing["items"][0])


class UpdatePatchTest(SimulatorTestCase):
    def test_stale_resource_version_conflicts(self):
        svc = self.create("services", service("web"))
        stale = json.loads(json.dumps(svc))
        svc["spec"]["selector"] = {"app": "other"}
        updated = self.sim.must("PUT", self.path("services", "web"), svc)
        self.assertEqual(updated["metadata"]["generation"], 2)

        stale["spec"]["selector"] = {"app": "stale"}
        resp = self.sim.request("PUT", self.path("services", "web"), stale)
        self.assertEqual((resp.status, resp.body["reason"]), (409, "Conflict"))
        self.assertIn("the object has been modified", resp.body["message"])

        patch = {"metadata": {"resourceVersion": stale["metadata"]["resourceVersion"]},
                 "spec": {"selector": {"app": "stale"}}}
        for content_type in ("application/merge-patch+json",
                             "application/strategic-merge-patch+json"):
            with self.subTest(content_type):
                resp = self.sim.request("PATCH", self.path("services", "web"), patch,
                                        content_type)
                self.assertEqual((resp.status, resp.body["reason"]), (409, "Conflict"))
        patch["metadata"]["resourceVersion"] = updated["metadata"]["resourceVersion"]
        patched = self.sim.must("PATCH", self.path("services", "web"), patch,
                                "application/merge-patch+json")
        self.assertEqual(patched["spec"]["selector"], {"app": "stale"})

        # without a resourceVersion, PUT is unconditional
        unconditional = json.loads(json.dumps(stale))
        del unconditional["metadata"]["resourceVersion"]
        self.assertEqual(self.sim.request("PUT", self.path("services", "web"),
                                          unconditional).status, 200)

    def test_lease_leader_election_relies_on_conflicts(self):
        group = "coordination.k8s.io/v1"
        lease = self.create("leases", {"metadata": {"name": "k8slb-watcher"},
                                       "spec": {"holderIdentity": "a",
                                                "leaseDurationSeconds": 15}}, group=group)
        a = json.loads(json.dumps(lease))
        b = json.loads(json.dumps(lease))
        a["spec"]["holderIdentity"] = "a"
        a["spec"]["renewTime"] = "2025-01-01T00:00:01.000000Z"
        b["spec"]["holderIdentity"] = "b"
        first = self.sim.request("PUT", self.path("leases", "k8slb-watcher", group=group), a)
        second = self.sim.request("PUT", self.path("leases", "k8slb-watcher", group=group), b)
        self.assertEqual((first.status, second.status), (200, 409))
        self.assertEqual(self.sim.must("GET", self.path("leases", "k8slb-watcher", group=group))
                         ["spec"]["holderIdentity"], "a")

    def test_status_subresource_changes_only_status(self):
        svc = self.create("services", service("web"))
        self.assertEqual(svc["status"], {"loadBalancer": {}})
        ingress = {"loadBalancer": {"ingress": [{"ip": "203.0.113.10", "ipMode": "Proxy"}]}}

        # PUT on the main resource ignores status
        svc["status"] = ingress
        svc = self.sim.must("PUT", self.path("services", "web"), svc)
        self.assertEqual(svc["status"], {"loadBalancer": {}})

        # merge patch on /status changes status and nothing else
        patched = self.sim.must("PATCH", self.path("services", "web", "status"),
                                {"status": ingress, "spec": {"selector": {"app": "x"}},
                                 "metadata": {"labels": {"x": "y"}}},
                                "application/merge-patch+json")
        self.assertEqual(patched["status"], ingress)
        self.assertEqual(patched["spec"], svc["spec"])
        self.assertEqual(patched["metadata"].get("labels"), svc["metadata"].get("labels"))
        self.assertEqual(patched["metadata"]["generation"], 1, "status does not bump generation")

        # PUT on /status with a changed spec: only the status is taken
        patched["spec"]["selector"] = {"app": "ignored"}
        # no ipMode: the server defaults it to VIP
        patched["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.11"}]}}
        put = self.sim.must("PUT", self.path("services", "web", "status"), patched)
        self.assertEqual(put["spec"]["selector"], {"app": "web"})
        self.assertEqual(put["status"]["loadBalancer"]["ingress"],
                         [{"ip": "203.0.113.11", "ipMode": "VIP"}])

        bad = self.sim.request("PATCH", self.path("services", "web", "status"),
                               {"status": {"loadBalancer": {"ingress": [{"ip": "not-an-ip"}]}}},
                               "application/merge-patch+json")
        self.assertEqual(bad.status, 422)
        self.assertIn("status.loadBalancer.ingress[0].ip", bad.body["message"])

    def test_generation_bumps_on_spec_changes_only(self):
        self.create("services", service("web"))
        steps = [
            ("label change", {"metadata": {"labels": {"a": "b"}}}, 1),
            ("annotation change", {"metadata": {"annotations": {"a": "b"}}}, 1),
            ("spec change", {"spec": {"selector": {"app": "v2"}}}, 2),
            ("same spec again", {"spec": {"selector": {"app": "v2"}}}, 2),
            ("another spec change", {"spec": {"externalTrafficPolicy": "Local"}}, 3),
        ]
        for description, patch, generation in steps:
            with self.subTest(description):
                got = self.sim.must("PATCH", self.path("services", "web"), patch,
                                    "application/merge-patch+json")
                self.assertEqual(got["metadata"]["generation"], generation)

    def test_no_op_update_keeps_resource_version(self):
        svc = self.create("services", service("web"))
        same = self.sim.must("PATCH", self.path("services", "web"),
                             {"spec": {"selector": {"app": "web"}}},
                             "application/merge-patch+json")
        self.assertEqual(same["metadata"]["resourceVersion"], svc["metadata"]["resourceVersion"])

    def test_patch_types(self):
        self.create("services", service("web"))
        steps = [
            ("strategic: add a port by merge key", "application/strategic-merge-patch+json",
             {"spec": {"ports": [{"name": "https", "port": 443}]}},
             [("http", 80), ("https", 443)]),
            ("strategic: change a port's target", "application/strategic-merge-patch+json",
             {"spec": {"ports": [{"port": 443, "targetPort": 8443}]}},
             [("http", 80), ("https", 443)]),
            ("strategic: delete a port", "application/strategic-merge-patch+json",
             {"spec": {"ports": [{"port": 80, "$patch": "delete"}]}}, [("https", 443)]),
            ("json patch: add a port", "application/json-patch+json",
             [{"op": "add", "path": "/spec/ports/-",
               "value": {"name": "dns", "port": 53, "protocol": "UDP"}}],
             [("https", 443), ("dns", 53)]),
            ("merge patch replaces the list", "application/merge-patch+json",
             {"spec": {"ports": [{"name": "http", "port": 80}]}}, [("http", 80)]),
        ]
        for description, content_type, patch, ports in steps:
            with self.subTest(description):
                got = self.sim.must("PATCH", self.path("services", "web"), patch, content_type)
                self.assertEqual([(p["name"], p["port"]) for p in got["spec"]["ports"]], ports)
        got = self.sim.must("GET", self.path("services", "web"))
        self.assertEqual(got["spec"]["ports"][0]["targetPort"], 80)

        failed_test = self.sim.request("PATCH", self.path("services", "web"),
                                       [{"op": "test", "path": "/spec/type", "value": "NodePort"}],
                                       "application/json-patch+json")
        self.assertEqual(failed_test.status, 422)
        unsupported = self.sim.request("PATCH", self.path("services", "web"), {},
                                       "application/apply-patch+yaml")
        self.assertEqual(unsupported.status, 415)


class ListTest(SimulatorTestCase):
    def test_paging_with_limit_and_continue(self):
        names = [f"cm-{i}" for i in range(7)]
        for name in names:
            self.create("configmaps", configmap(name))
        seen, pages, cont = [], [], None
        for _ in range(10):
            query = {"limit": 3}
            if cont:
                query["continue"] = cont
            page = self.sim.must("GET", self.path("configmaps", query=query))
            pages.append(len(page["items"]))
            seen += [i["metadata"]["name"] for i in page["items"]]
            cont = page["metadata"].get("continue")
            if len(seen) == 3:
                # a change between pages is not in the list: pages come from one snapshot
                self.create("configmaps", configmap("cm-9"))
                self.sim.must("DELETE", self.path("configmaps", "cm-6"))
                self.assertEqual(page["metadata"]["remainingItemCount"], 4)
            if not cont:
                break
        self.assertEqual(pages, [3, 3, 1])
        self.assertEqual(seen, names)

    def test_continue_token_expires(self):
        for i in range(3):
            self.create("configmaps", configmap(f"cm-{i}"))
        page = self.sim.must("GET", self.path("configmaps", query={"limit": 1}))
        self.create("configmaps", configmap("after"))
        self.sim.fault(compact=True)
        resp = self.sim.request("GET", self.path("configmaps", query={
            "limit": 1, "continue": page["metadata"]["continue"]}))
        self.assertEqual((resp.status, resp.body["reason"]), (410, "Expired"))
        garbage = self.sim.request("GET", self.path("configmaps", query={"continue": "xyz"}))
        self.assertEqual(garbage.status, 400)

    def test_label_and_field_selectors(self):
        objects = {"a": {"app": "web", "tier": "front"}, "b": {"app": "web", "tier": "back"},
                   "c": {"app": "db"}, "d": {}}
        for name, labels in objects.items():
            self.create("configmaps", configmap(name, labels))
        cases = [
            ("app=web", "", ["a", "b"]),
            ("app==web", "", ["a", "b"]),
            ("app!=web", "", ["c", "d"]),
            ("tier in (front,middle)", "", ["a"]),
            ("app notin (web)", "", ["c", "d"]),
            ("tier", "", ["a", "b"]),
            ("!tier", "", ["c", "d"]),
            ("app=web,tier!=back", "", ["a"]),
            ("", "metadata.name=c", ["c"]),
            ("", "metadata.name!=c", ["a", "b", "d"]),
            ("app=web", "metadata.name==b", ["b"]),
            ("", f"metadata.namespace={self.ns}", ["a", "b", "c", "d"]),
        ]
        for labels, fields, expected in cases:
            with self.subTest(labels=labels, fields=fields):
                query = {"labelSelector": labels, "fieldSelector": fields}
                got = self.sim.must("GET", self.path("configmaps", query=query))
                self.assertEqual([i["metadata"]["name"] for i in got["items"]], expected)
        everywhere = self.sim.must("GET", "/api/v1/configmaps?fieldSelector=" +
                                   urllib.parse.quote(f"metadata.namespace={self.ns}"))
        self.assertEqual(len(everywhere["items"]), 4)
        for bad in ({"fieldSelector": "data.k=v"}, {"labelSelector": "a in ("},
                    {"labelSelector": "bad key!=x"}):
            with self.subTest(bad=bad):
                self.assertEqual(self.sim.request("GET", self.path("configmaps", query=bad))
                                 .status, 400)

    def test_list_at_exact_resource_version(self):
        self.create("configmaps", configmap("a"))
        rv = self.list_rv("configmaps")
        self.create("configmaps", configmap("b"))
        old = self.sim.must("GET", self.path("configmaps", query={
            "resourceVersion": rv, "resourceVersionMatch": "Exact"}))
        self.assertEqual([i["metadata"]["name"] for i in old["items"]], ["a"])
        self.assertEqual(old["metadata"]["resourceVersion"], rv)


class WatchTest(SimulatorTestCase):
    sim_options = {"bookmark_interval": 0.2}

    def test_watch_from_list_resource_version_sees_later_changes_in_order(self):
        self.create("configmaps", configmap("before"))
        rv = self.list_rv("configmaps")
        self.create("configmaps", configmap("a"))
        self.sim.must("PATCH", self.path("configmaps", "a"), {"data": {"k": "v2"}},
                      "application/merge-patch+json")
        self.sim.must("DELETE", self.path("configmaps", "before"))
        self.create("services", service("not-a-configmap"))
        with self.sim.watch(self.path("configmaps", query={"watch": 1, "resourceVersion": rv,
                                                           "timeoutSeconds": 5})) as w:
            self.assertEqual(w.status, 200)
            events = w.events(3)
            self.create("configmaps", configmap("live"))
            events += w.events(1)
        got = [(e["type"], e["object"]["metadata"]["name"]) for e in events]
        self.assertEqual(got, [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "before"),
                               ("ADDED", "live")])
        rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
        self.assertEqual(rvs, sorted(rvs))
        self.assertGreater(rvs[0], int(rv))
        self.assertEqual(events[1]["object"]["data"], {"k": "v2"})
        self.assertEqual(events[0]["object"]["kind"], "ConfigMap")

    def test_watch_without_resource_version_starts_with_current_objects(self):
        self.create("configmaps", configmap("a"))
        self.create("configmaps", configmap("b"))
        for rv in ("", "0"):
            with self.subTest(resourceVersion=rv):
                query = {"watch": 1, "timeoutSeconds": 5}
                if rv:
                    query["resourceVersion"] = rv
                with self.sim.watch(self.path("configmaps", query=query)) as w:
                    events = w.events(2)
                self.assertEqual([(e["type"], e["object"]["metadata"]["name"]) for e in events],
                                 [("ADDED", "a"), ("ADDED", "b")])

    def test_bookmarks_and_the_clean_end(self):
        rv = self.list_rv("configmaps")
        with self.sim.watch(self.path("configmaps", query={
                "watch": 1, "resourceVersion": rv, "allowWatchBookmarks": "true",
                "timeoutSeconds": 2})) as w:
            bookmark = w.events(1, types=("BOOKMARK",))[0]
            self.create("configmaps", configmap("a"))
            added = w.events(1, types=("ADDED",))[0]
            later = w.events(1, types=("BOOKMARK",))[0]
            rest = []
            for _ in range(100):
                event = w.next_event()
                if event is None:
                    break
                rest.append(event)
        self.assertEqual(set(bookmark["object"]), {"kind", "apiVersion", "metadata"})
        self.assertEqual(set(bookmark["object"]["metadata"]), {"resourceVersion"})
        self.assertEqual(bookmark["object"]["kind"], "ConfigMap")
        self.assertGreaterEqual(int(bookmark["object"]["metadata"]["resourceVersion"]), int(rv))
        self.assertGreaterEqual(int(later["object"]["metadata"]["resourceVersion"]),
                                int(added["object"]["metadata"]["resourceVersion"]))
        self.assertTrue(rest and rest[-1]["type"] == "BOOKMARK", "a bookmark at the end")

    def test_send_initial_events_ends_with_an_annotated_bookmark(self):
        self.create("configmaps", configmap("a"))
        with self.sim.watch(self.path("configmaps", query={
                "watch": 1, "sendInitialEvents": "true", "allowWatchBookmarks": "true",
                "resourceVersionMatch": "NotOlderThan", "timeoutSeconds": 3})) as w:
            events = w.events(2)
        self.assertEqual(events[0]["type"], "ADDED")
        self.assertEqual(events[1]["type"], "BOOKMARK")
        self.assertEqual(events[1]["object"]["metadata"]["annotations"],
                         {"k8s.io/initial-events-end": "true"})

    def test_expired_resource_version_gives_410(self):
        rv = self.list_rv("configmaps")
        self.create("configmaps", configmap("a"))
        self.sim.fault(compact=True)
        with self.sim.watch(self.path("configmaps", query={
                "watch": 1, "resourceVersion": rv, "timeoutSeconds": 5})) as w:
            self.assertEqual(w.status, 200)
            event = w.next_event()
            self.assertIsNone(w.next_event(), "the stream ends after the error")
        self.assertEqual(event["type"], "ERROR")
        self.assertEqual((event["object"]["kind"], event["object"]["code"],
                          event["object"]["reason"]), ("Status", 410, "Expired"))
        resp = self.sim.request("GET", self.path("configmaps", query={
            "resourceVersion": rv, "resourceVersionMatch": "Exact"}))
        self.assertEqual(resp.status, 410)
        # a resourceVersion at or after the compaction still works
        now = self.list_rv("configmaps")
        with self.sim.watch(self.path("configmaps", query={
                "watch": 1, "resourceVersion": now, "timeoutSeconds": 5})) as w:
            self.create("configmaps", configmap("b"))
            self.assertEqual(w.next_event()["type"], "ADDED")

    def test_selector_watch_sends_deleted_when_an_object_stops_matching(self):
        rv = self.list_rv("configmaps")
        self.create("configmaps", configmap("a", {"pick": "yes"}))
        self.sim.must("PATCH", self.path("configmaps", "a"),
                      {"metadata": {"labels": {"pick": "no"}}}, "application/merge-patch+json")
        self.sim.must("PATCH", self.path("configmaps", "a"),
                      {"metadata": {"labels": {"pick": "yes"}}}, "application/merge-patch+json")
        self.create("configmaps", configmap("b", {"pick": "no"}))
        with self.sim.watch(self.path("configmaps", query={
                "watch": 1, "resourceVersion": rv, "labelSelector": "pick=yes",
                "timeoutSeconds": 1})) as w:
            events = w.events(10)
        self.assertEqual([(e["type"], e["object"]["metadata"]["name"]) for e in events],
                         [("ADDED", "a"), ("DELETED", "a"), ("ADDED", "a")])

    def test_watch_one_object_by_name(self):
        self.create("configmaps", configmap("a"))
        self.create("configmaps", configmap("b"))
        with self.sim.watch(self.path("configmaps", query={
                "watch": 1, "fieldSelector": "metadata.name=b", "timeoutSeconds": 1})) as w:
            events = w.events(10)
        self.assertEqual([e["object"]["metadata"]["name"] for e in events], ["b"])

    def test_a_watch_ends_when_its_client_goes_away(self):
        w = self.sim.watch(self.path("configmaps", query={"watch": 1, "timeoutSeconds": 600}))
        self.assertGreaterEqual(self.sim.stats()["watches_open"], 1)
        w.close()
        open_watches = None
        for _ in range(100):  # the server notices within about half a second
            open_watches = self.sim.stats()["watches_open"]
            if open_watches == 0:
                break
            time.sleep(0.1)
        self.assertEqual(open_watches, 0)

    def test_concurrent_writers_one_ordered_stream(self):
        writers, per_writer = 4, 25
        rv = self.list_rv("configmaps")
        failures = []

        def write(w):
            try:
                for i in range(per_writer):
                    self.create("configmaps", configmap(f"w{w}-{i}"))
            except Exception as e:  # reported below
                failures.append(e)

        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        with self.sim.watch(self.path("configmaps", query={
                "watch": 1, "resourceVersion": rv, "timeoutSeconds": 30})) as w:
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            events = w.events(writers * per_writer)
        self.assertEqual(failures, [])
        rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
        self.assertEqual(len(events), writers * per_writer)
        self.assertEqual(rvs, sorted(set(rvs)), "strictly increasing, no duplicates")
        self.assertEqual(rvs, list(range(int(rv) + 1, int(rv) + 1 + len(rvs))), "no gaps")


class WindowTest(SimulatorTestCase):
    sim_options = {"window": 5}

    def test_resource_version_older_than_the_window_is_expired(self):
        rv = self.list_rv("configmaps")
        for i in range(6):
            self.create("configmaps", configmap(f"cm-{i}"))
        with self.sim.watch(self.path("configmaps", query={
                "watch": 1, "resourceVersion": rv, "timeoutSeconds": 5})) as w:
            event = w.next_event()
        self.assertEqual((event["type"], event["object"]["code"]), ("ERROR", 410))
        recent = self.sim.must("GET", self.path("configmaps"))["metadata"]["resourceVersion"]
        with self.sim.watch(self.path("configmaps", query={
                "watch": 1, "resourceVersion": str(int(recent) - 2), "timeoutSeconds": 1})) as w:
            events = w.events(10)
        self.assertEqual([e["object"]["metadata"]["name"] for e in events], ["cm-4", "cm-5"])


class FaultTest(SimulatorTestCase):
    def test_drop_watches_breaks_the_stream(self):
        with self.sim.watch(self.path("configmaps", query={"watch": 1, "timeoutSeconds": 30,
                                                           "resourceVersion": self.list_rv(
                                                               "configmaps")})) as w:
            self.create("configmaps", configmap("a"))
            self.assertEqual(w.next_event()["type"], "ADDED")
            self.assertEqual(self.sim.stats()["watches_open"], 1)
            self.sim.fault(drop_watches=True)
            with self.assertRaises((http.client.IncompleteRead, ConnectionError, ssl.SSLError,
                                    http.client.HTTPException)):
                w.next_event()
        self.assertEqual(self.sim.stats()["watches_open"], 0)

    def test_restart_drops_watches_and_forgets_history(self):
        rv = self.list_rv("configmaps")
        self.create("configmaps", configmap("a"))
        with self.sim.watch(self.path("configmaps", query={"watch": 1, "timeoutSeconds": 30,
                                                           "resourceVersion": rv})) as w:
            self.assertEqual(w.next_event()["type"], "ADDED")
            self.sim.fault(restart=True)
            with self.assertRaises((http.client.IncompleteRead, ConnectionError, ssl.SSLError,
                                    http.client.HTTPException)):
                w.next_event()
        with self.sim.watch(self.path("configmaps", query={"watch": 1, "timeoutSeconds": 5,
                                                           "resourceVersion": rv})) as w:
            self.assertEqual(w.next_event()["object"]["code"], 410)

    def test_errors_500(self):
        self.sim.fault(errors_500=2)
        statuses = [self.sim.request("GET", self.path("configmaps")).status for _ in range(3)]
        self.assertEqual(statuses, [500, 500, 200])
        self.sim.fault(errors_500=1)
        resp = self.sim.request("GET", "/api/v1/namespaces")
        self.assertEqual((resp.body["kind"], resp.body["reason"]), ("Status", "InternalError"))

    def test_errors_only_for_matching_requests(self):
        self.create("services", service("web"))
        self.sim.fault(errors_500=1, method="PATCH", path_contains="/status")
        self.assertEqual(self.sim.request("GET", self.path("services", "web")).status, 200)
        status_patch = {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}}
        first = self.sim.request("PATCH", self.path("services", "web", "status"), status_patch,
                                 "application/merge-patch+json")
        second = self.sim.request("PATCH", self.path("services", "web", "status"), status_patch,
                                  "application/merge-patch+json")
        self.assertEqual((first.status, second.status), (500, 200))

    def test_throttle_429_with_retry_after(self):
        self.sim.fault(throttle_429=1, retry_after=7)
        first = self.sim.request("GET", self.path("configmaps"))
        self.assertEqual(first.status, 429)
        self.assertEqual(first.headers["Retry-After"], "7")
        self.assertEqual(first.body["reason"], "TooManyRequests")
        self.assertEqual(first.body["details"]["retryAfterSeconds"], 7)
        self.assertEqual(self.sim.request("GET", self.path("configmaps")).status, 200)

    def test_delay(self):
        # The delayed answer cannot arrive within a client timeout far below the delay.
        self.sim.fault(delay_ms=3000)
        with self.assertRaises((socket.timeout, TimeoutError)):
            self.sim.request("GET", self.path("configmaps"), timeout=0.5)
        self.sim.fault(delay_ms=0)
        self.assertEqual(self.sim.request("GET", self.path("configmaps"), timeout=5).status, 200)

    def test_reset_clears_faults(self):
        self.sim.fault(errors_500=5, throttle_429=5, delay_ms=10)
        self.sim.reset_faults()
        self.assertEqual(self.sim.request("GET", self.path("configmaps")).status, 200)

    def test_stats_count_requests_by_method_and_resource(self):
        before = self.sim.stats()["requests"].get("PATCH services/status", 0)
        self.create("services", service("web"))
        for ip in ("203.0.113.1", "203.0.113.2"):
            self.sim.must("PATCH", self.path("services", "web", "status"),
                          {"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}},
                          "application/merge-patch+json")
        stats = self.sim.stats()
        self.assertEqual(stats["requests"]["PATCH services/status"] - before, 2)
        self.assertGreaterEqual(stats["verbs"]["create services"], 1)
        self.sim.must("GET", self.path("leases", group="coordination.k8s.io/v1"))
        self.assertGreaterEqual(self.sim.stats()["verbs"]["list leases.coordination.k8s.io"], 1)


class RateFaultTest(SimulatorTestCase):
    def statuses(self, count, path=None, exempt=False):
        headers = {"X-Sim-Exempt": "1"} if exempt else None
        return [self.sim.request("GET", path or self.path("configmaps"), headers=headers).status
                for _ in range(count)]

    def test_a_rate_fault_fails_that_share_of_matching_requests_for_its_time(self):
        self.sim.fault(rate={"percent": 50, "seconds": 30, "status": 500}, seed=7)
        statuses = self.statuses(200)
        failed = statuses.count(500)
        self.assertEqual(failed + statuses.count(200), 200, statuses)
        self.assertTrue(60 <= failed <= 140, f"{failed} of 200 failed at 50 %")
        self.assertEqual(self.sim.stats()["faults"]["rates"][0]["percent"], 50)

    def test_a_rate_fault_ends_after_its_seconds(self):
        self.sim.fault(rate={"percent": 100, "seconds": 0.5, "status": 500})
        self.assertEqual(self.statuses(3), [500, 500, 500])
        time.sleep(0.7)
        self.assertEqual(self.statuses(3), [200, 200, 200])
        self.assertEqual(self.sim.stats()["faults"]["rates"], [])

    def test_429_with_retry_after_and_matching(self):
        self.sim.fault(rate={"percent": 100, "seconds": 30, "status": 429, "retry_after": 2,
                             "method": "GET", "path_contains": "/configmaps"})
        resp = self.sim.request("GET", self.path("configmaps"))
        self.assertEqual((resp.status, resp.headers.get("Retry-After")), (429, "2"))
        self.assertEqual(resp.body["details"]["retryAfterSeconds"], 2)
        self.assertEqual(self.statuses(2, self.path("services")), [200, 200])
        self.assertEqual(self.sim.request("POST", self.path("configmaps"), configmap("x")).status, 201)

    def test_the_tests_own_requests_can_be_exempt(self):
        self.sim.fault(rate={"percent": 100, "seconds": 30, "status": 500}, errors_500=3,
                       delay_ms=2000)
        self.assertEqual(self.statuses(3, exempt=True), [200, 200, 200])
        self.assertEqual(self.sim.stats()["faults"]["errors_500"], 3, "not used up by exempt requests")

    def test_bad_rate_faults_are_refused(self):
        for rate in ({"percent": 0, "seconds": 5}, {"percent": 50, "seconds": 0},
                     {"percent": 50, "seconds": 5, "status": 404}, {"percent": "x", "seconds": 5},
                     {"percent": 50, "seconds": 5, "paths": "/x"}, "50%"):
            with self.subTest(rate=rate):
                self.assertEqual(self.sim.request("POST", "/_sim/faults", {"rate": rate}).status, 400)
        self.assertEqual(self.sim.stats()["faults"]["rates"], [])


class AuditTest(SimulatorTestCase):
    def test_every_ingress_value_is_in_the_audit_log_with_its_time(self):
        start = len(self.sim.audit())
        self.create("services", service("web"))
        status = self.path("services", "web", "status")
        for ips in (["203.0.113.1"], ["203.0.113.1"], ["203.0.113.2", "2001:db8::2"], []):
            self.sim.must("PATCH", status, {"status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}},
                          "application/merge-patch+json")
        self.sim.must("PATCH", status, {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.3"}]}}},
                      "application/merge-patch+json")
        self.sim.must("DELETE", self.path("services", "web"))
        entries = [e for e in self.sim.audit(start) if e["namespace"] == self.ns]
        self.assertEqual([(e["type"], e["ips"], e["previous"]) for e in entries], [
            ("MODIFIED", ["203.0.113.1"], []),  # the same value twice is one entry
            ("MODIFIED", ["203.0.113.2", "2001:db8::2"], ["203.0.113.1"]),
            ("MODIFIED", [], ["203.0.113.2", "2001:db8::2"]),
            ("MODIFIED", ["203.0.113.3"], []),
            ("DELETED", [], ["203.0.113.3"]),
        ])
        self.assertEqual(len({e["uid"] for e in entries}), 1)
        times = [e["time"] for e in entries]
        self.assertEqual(times, sorted(times))
        self.assertEqual([e["seq"] for e in entries], list(range(entries[0]["seq"], entries[0]["seq"] + 5)))


class RealServerRulesTest(SimulatorTestCase):
    """Rules of the real API server, each from the Kubernetes source cited in kubesim.py:
    neither more lenient nor stricter."""

    def expect_invalid(self, resp, message):
        self.assertEqual(resp.status, 422, resp.body)
        self.assertEqual(resp.body["reason"], "Invalid")
        self.assertIn(message, resp.body["message"])

    def test_annotation_keys_are_checked_lower_cased_and_their_size_is_limited(self):
        # apimachinery ValidateAnnotations lower-cases a key before the qualified-name check.
        cases = [("the original's spelling", {"loadBalancer/pool": "external"}, None),
                 ("upper-case prefix", {"LoadBalancer.Example.COM/Pool": "x"}, None),
                 ("space in the key", {"loadbalancer/my pool": "x"},
                  'metadata.annotations: Invalid value: "loadbalancer/my pool": name part'),
                 ("empty prefix", {"/pool": "x"}, 'Invalid value: "/pool": prefix part'),
                 ("256 KiB exactly", {"k": "v" * (262144 - 1)}, None),
                 ("one byte more", {"k": "v" * 262144},
                  "metadata.annotations: Too long: must have at most 262144 bytes")]
        for i, (description, annotations, message) in enumerate(cases):
            with self.subTest(description):
                body = configmap(f"a{i}")
                body["metadata"]["annotations"] = annotations
                resp = self.sim.request("POST", self.path("configmaps"), body)
                if message is None:
                    self.assertEqual(resp.status, 201, resp.body)
                    self.assertEqual(resp.body["metadata"]["annotations"], annotations)
                else:
                    self.expect_invalid(resp, message)

    def test_configmaps_over_one_mebibyte_are_refused(self):
        mib = 1024 * 1024
        b64 = __import__("base64").b64encode
        cases = [("1 MiB of data", {"data": {"a": "x" * (mib - 10), "b": "y" * 10}}, None),
                 ("1 MiB + 1", {"data": {"a": "x" * (mib - 10), "b": "y" * 11}},
                  'ConfigMap "c1" is invalid: []: Too long: must have at most 1048576 bytes'),
                 ("binaryData counts decoded", {"data": {"a": "x" * (mib - 3)},
                                                "binaryData": {"b": b64(b"abc").decode()}}, None),
                 ("data and binaryData together", {"data": {"a": "x" * (mib - 3)},
                                                   "binaryData": {"b": b64(b"abcd").decode()}},
                  "[]: Too long: must have at most 1048576 bytes"),
                 ("bad key", {"data": {"a/b": "x"}}, 'data[a/b]: Invalid value: "a/b"'),
                 ("key in both", {"data": {"k": "x"}, "binaryData": {"k": ""}},
                  "duplicate of key present in binaryData")]
        for i, (description, content, message) in enumerate(cases):
            with self.subTest(description):
                body = dict({"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": f"c{i}"}}, **content)
                resp = self.sim.request("POST", self.path("configmaps"), body)
                if message is None:
                    self.assertEqual(resp.status, 201, resp.body.get("message"))
                else:
                    self.expect_invalid(resp, message)
        # An update is held to the same limit.
        grow = self.sim.request("PATCH", self.path("configmaps", "c0"),
                                {"data": {"c": "z"}}, "application/merge-patch+json")
        self.expect_invalid(grow, "[]: Too long: must have at most 1048576 bytes")

    def test_load_balancer_ingress_is_validated_and_defaulted_as_the_real_server_does(self):
        self.create("services", service("lb"))
        cases = [
            ("ip gets ipMode VIP", [{"ip": "203.0.113.5"}],
             [{"ip": "203.0.113.5", "ipMode": "VIP"}]),
            ("ipMode Proxy kept", [{"ip": "2001:db8::5", "ipMode": "Proxy"}],
             [{"ip": "2001:db8::5", "ipMode": "Proxy"}]),
            ("leading zeros parse, as ParseIPSloppy does", [{"ip": "203.0.113.05"}],
             [{"ip": "203.0.113.05", "ipMode": "VIP"}]),
            ("hostname", [{"hostname": "lb.example.com"}], [{"hostname": "lb.example.com"}]),
            ("bad ip", [{"ip": "203.0.113"}],
             'status.loadBalancer.ingress[0].ip: Invalid value: "203.0.113": must be a valid '
             "IP address"),
            ("ipMode without ip", [{"hostname": "lb.example.com", "ipMode": "VIP"}],
             "status.loadBalancer.ingress[0].ipMode: Forbidden: may not be specified when `ip` "
             "is not set"),
            ("unknown ipMode", [{"ip": "203.0.113.5", "ipMode": "Direct"}],
             'status.loadBalancer.ingress[0].ipMode: Unsupported value: "Direct": supported '
             'values: "Proxy", "VIP"'),
            ("hostname not DNS-1123", [{"hostname": "LB_1.example.com"}],
             'status.loadBalancer.ingress[0].hostname: Invalid value: "LB_1.example.com": a '
             "lowercase RFC 1123 subdomain"),
            ("IP as hostname", [{"hostname": "203.0.113.5"}],
             'status.loadBalancer.ingress[0].hostname: Invalid value: "203.0.113.5": must be a '
             "DNS name, not an IP address"),
        ]
        for description, ingress, expected in cases:
            with self.subTest(description):
                resp = self.sim.request("PATCH", self.path("services", "lb", "status"),
                                        {"status": {"loadBalancer": {"ingress": ingress}}},
                                        "application/merge-patch+json")
                if isinstance(expected, list):
                    self.assertEqual(resp.status, 200, resp.body)
                    self.assertEqual(resp.body["status"]["loadBalancer"]["ingress"], expected)
                else:
                    self.expect_invalid(resp, expected)
        # Only a LoadBalancer Service may have an ingress (AllowServiceLBStatusOnNonLB is off).
        self.create("services", service("cip", type="ClusterIP"))
        resp = self.sim.request("PATCH", self.path("services", "cip", "status"),
                                {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}},
                                "application/merge-patch+json")
        self.expect_invalid(resp, "status.loadBalancer.ingress: Forbidden: may only be used when "
                                  "`spec.type` is 'LoadBalancer'")


def pod(name, **spec):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
            "spec": dict({"containers": [{"name": "web", "image": "registry.example/web:1.0",
                                          "ports": [{"containerPort": 8080}]}]}, **spec),
            "status": {"phase": "Running"}}


class PodTest(SimulatorTestCase):
    def test_pods_are_served_like_the_other_kinds(self):
        rv = self.list_rv("pods")
        created = self.create("pods", pod("web"))
        meta = created["metadata"]
        self.assertTrue(meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"])
        # The status sent on create is replaced, as pod strategy's PrepareForCreate does.
        self.assertEqual(created["status"], {"phase": "Pending", "qosClass": "BestEffort"})
        container = created["spec"]["containers"][0]
        self.assertEqual((container["imagePullPolicy"], container["ports"][0]["protocol"],
                          created["spec"]["restartPolicy"]), ("IfNotPresent", "TCP", "Always"))
        self.assertEqual(self.sim.must("GET", self.path("pods", "web"))["metadata"]["uid"],
                         meta["uid"])
        with self.sim.watch(self.path("pods", query={"watch": "1", "resourceVersion": rv,
                                                      "timeoutSeconds": "5"})) as w:
            event = w.next_event()
            self.assertEqual((event["type"], event["object"]["metadata"]["name"]),
                             ("ADDED", "web"))
        # kubelet's part, through /status: Running with an IP; field selectors on it.
        self.sim.must("PATCH", self.path("pods", "web", "status"),
                      {"status": {"phase": "Running", "podIP": "198.51.100.7"}},
                      "application/merge-patch+json")
        self.create("pods", pod("idle"))
        running = self.sim.must("GET", self.path("pods", query={
            "fieldSelector": "status.phase=Running"}))["items"]
        self.assertEqual([p["metadata"]["name"] for p in running], ["web"])
        # A pod never scheduled goes at once; one bound to a node waits for its kubelet
        # (graceful deletion) unless the grace period is 0.
        self.sim.must("DELETE", self.path("pods", "idle"))
        self.assertEqual(self.sim.request("GET", self.path("pods", "idle")).status, 404)
        self.create("pods", pod("bound", nodeName="lb-1"))
        marked = self.sim.must("DELETE", self.path("pods", "bound"))
        self.assertEqual(marked["metadata"]["deletionGracePeriodSeconds"], 30)
        self.assertEqual(self.sim.request("GET", self.path("pods", "bound")).status, 200)
        self.sim.must("DELETE", self.path("pods", "bound"), {"gracePeriodSeconds": 0})
        self.assertEqual(self.sim.request("GET", self.path("pods", "bound")).status, 404)

    def test_pod_validation(self):
        cases = [("no containers", pod("a", containers=[]), "spec.containers: Required value"),
                 ("no image", pod("b", containers=[{"name": "c"}]),
                  "spec.containers[0].image: Required value"),
                 ("bad port", pod("c", containers=[{"name": "c", "image": "i",
                                                     "ports": [{"containerPort": 0}]}]),
                  "spec.containers[0].ports[0].containerPort: Invalid value: 0")]
        for description, body, message in cases:
            with self.subTest(description):
                resp = self.sim.request("POST", self.path("pods"), body)
                self.assertEqual(resp.status, 422, resp.body)
                self.assertIn(message, resp.body["message"])


class IpFamilyTest(unittest.TestCase):
    """spec.ipFamilies, ipFamilyPolicy and clusterIPs as the API server sets them from the
    cluster's families (pkg/registry/core/service/storage/alloc.go, initIPFamilyFields)."""

    V4, V6 = ipaddress.ip_network("10.96.0.0/12"), ipaddress.ip_network("fd00:10:96::/108")
    CASES = {
        "IPv4": [
            ("defaults", {}, (["IPv4"], "SingleStack")),
            ("PreferDualStack stays single", {"ipFamilyPolicy": "PreferDualStack"},
             (["IPv4"], "PreferDualStack")),
            ("IPv6 asked", {"ipFamilies": ["IPv6"]},
             'spec.ipFamilies[0]: Invalid value: "IPv6": not configured on this cluster'),
            ("dual stack required", {"ipFamilyPolicy": "RequireDualStack"},
             'spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not '
             "configured for dual-stack services"),
            ("IPv6 cluster IP", {"clusterIP": "fd00:10:96::5"},
             "IPv6 is not configured on this cluster"),
            ("unknown family", {"ipFamilies": ["IPv5"]},
             'spec.ipFamilies[0]: Unsupported value: "IPv5"'),
            ("families on an ExternalName Service",
             {"type": "ExternalName", "externalName": "db.example.com", "ipFamilies": ["IPv4"],
              "ipFamilyPolicy": "SingleStack"},
             "[spec.ipFamilies: Forbidden: may not be set for ExternalName services, "
             "spec.ipFamilyPolicy: Forbidden: may not be set for ExternalName services]"),
        ],
        "IPv6": [
            ("defaults", {}, (["IPv6"], "SingleStack")),
            ("IPv4 asked", {"ipFamilies": ["IPv4"]},
             'spec.ipFamilies[0]: Invalid value: "IPv4": not configured on this cluster'),
        ],
        "IPv4,IPv6": [
            ("defaults", {}, (["IPv4"], "SingleStack")),
            ("IPv6 single stack", {"ipFamilies": ["IPv6"]}, (["IPv6"], "SingleStack")),
            ("PreferDualStack", {"ipFamilyPolicy": "PreferDualStack"},
             (["IPv4", "IPv6"], "PreferDualStack")),
            ("RequireDualStack, IPv6 first",
             {"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6"]},
             (["IPv6", "IPv4"], "RequireDualStack")),
            ("two families need a dual-stack policy", {"ipFamilies": ["IPv4", "IPv6"]},
             'spec.ipFamilyPolicy: Invalid value: "SingleStack": must be \'RequireDualStack\' '
             "or 'PreferDualStack' when multiple IP families are specified"),
            ("cluster IP of another family than ipFamilies[0]",
             {"ipFamilies": ["IPv4"], "clusterIP": "fd00:10:96::7"},
             "expected an IPv4 value as indicated by `ipFamilies[0]`"),
        ],
        "IPv6,IPv4": [
            ("defaults", {}, (["IPv6"], "SingleStack")),
            ("PreferDualStack", {"ipFamilyPolicy": "PreferDualStack"},
             (["IPv6", "IPv4"], "PreferDualStack")),
        ],
    }

    def test_defaults_and_errors_for_each_kind_of_cluster(self):
        for cluster, cases in self.CASES.items():
            workdir = tempfile.mkdtemp(prefix="kubesim-families-")
            self.addCleanup(shutil.rmtree, workdir, True)
            sim = kubesim_client.start(workdir, ip_families=cluster)
            self.addCleanup(sim.stop)
            for i, (description, spec, expected) in enumerate(cases):
                with self.subTest(cluster=cluster, case=description):
                    body = service(f"s{i}")
                    body["spec"].update(spec)
                    resp = sim.request("POST", "/api/v1/namespaces/default/services", body)
                    if isinstance(expected, str):
                        self.assertEqual(resp.status, 422, resp.body)
                        self.assertIn(expected, resp.body["message"])
                        continue
                    self.assertEqual(resp.status, 201, resp.body)
                    got = resp.body["spec"]
                    self.assertEqual((got["ipFamilies"], got["ipFamilyPolicy"]), expected)
                    self.assertEqual(got["clusterIP"], got["clusterIPs"][0])
                    self.assertEqual([self.family(ip) for ip in got["clusterIPs"]],
                                     got["ipFamilies"])

    def family(self, ip):
        address = ipaddress.ip_address(ip)
        self.assertIn(address, self.V4 if address.version == 4 else self.V6)
        return f"IPv{address.version}"

    def test_dual_stack_upgrade_and_downgrade(self):
        workdir = tempfile.mkdtemp(prefix="kubesim-families-")
        self.addCleanup(shutil.rmtree, workdir, True)
        sim = kubesim_client.start(workdir, ip_families="IPv4,IPv6")
        self.addCleanup(sim.stop)
        path = "/api/v1/namespaces/default/services"
        svc = sim.must("POST", path, service("web"))
        first = svc["spec"]["clusterIP"]
        up = sim.must("PATCH", f"{path}/web", {"spec": {"ipFamilyPolicy": "PreferDualStack"}},
                      "application/merge-patch+json")
        self.assertEqual(up["spec"]["ipFamilies"], ["IPv4", "IPv6"])
        self.assertEqual(up["spec"]["clusterIPs"][0], first)
        self.assertEqual(self.family(up["spec"]["clusterIPs"][1]), "IPv6")
        down = sim.must("PATCH", f"{path}/web", {"spec": {"ipFamilyPolicy": "SingleStack"}},
                        "application/merge-patch+json")
        self.assertEqual((down["spec"]["ipFamilies"], down["spec"]["clusterIPs"]),
                         (["IPv4"], [first]))
        # The released IPv6 cluster IP can be asked for again.
        again = service("again")
        again["spec"].update(ipFamilies=["IPv6"], clusterIP=up["spec"]["clusterIPs"][1])
        self.assertEqual(sim.request("POST", path, again).status, 201)
        # Headless without a selector: every family of the cluster, no cluster IP.
        headless = service("headless", clusterIP="None", type="ClusterIP")
        del headless["spec"]["selector"]
        got = sim.must("POST", path, headless)["spec"]
        self.assertEqual((got["clusterIPs"], got["ipFamilies"], got["ipFamilyPolicy"]),
                         (["None"], ["IPv4", "IPv6"], "PreferDualStack"))


class ServiceCidrTest(SimulatorTestCase):
    sim_options = {"ip_families": "IPv4,IPv6"}  # dual-stack: both ranges are in use

    def test_cluster_ips_come_from_a_realistic_service_cidr(self):
        ips = []
        for i in range(300):  # more than a /24 holds
            ips.append(self.create("services", service(f"s{i}"))["spec"]["clusterIP"])
        self.assertEqual(len(set(ips)), 300)
        for ip in ips:
            self.assertIn(ipaddress.ip_address(ip), ipaddress.ip_network("10.96.0.0/12"))
        v6 = self.create("services", dict(service("six"), spec=dict(service("six")["spec"], ipFamilies=["IPv6"])))
        self.assertIn(ipaddress.ip_address(v6["spec"]["clusterIP"]), ipaddress.ip_network("fd00:10:96::/108"))
        taken = self.sim.request("POST", self.path("services"),
                                 dict(service("dup"), spec=dict(service("dup")["spec"], clusterIP=ips[0])))
        self.assertEqual(taken.status, 422)
        outside = self.sim.request("POST", self.path("services"),
                                   dict(service("out"), spec=dict(service("out")["spec"], clusterIP="192.0.2.1")))
        self.assertEqual(outside.status, 422)
        # The range's edges as the API server's allocator counts them: never the first address,
        # the IPv4 broadcast address neither, but IPv6's last address is a cluster IP.
        for name, family, ip, status in [("edge-v4-first", "IPv4", "10.96.0.0", 422),
                                         ("edge-v4-last", "IPv4", "10.111.255.255", 422),
                                         ("edge-v4-ok", "IPv4", "10.111.255.254", 201),
                                         ("edge-v6-first", "IPv6", "fd00:10:96::", 422),
                                         ("edge-v6-last", "IPv6", "fd00:10:96::f:ffff", 201)]:
            with self.subTest(ip=ip):
                body = dict(service(name), spec=dict(service(name)["spec"], clusterIP=ip, ipFamilies=[family]))
                self.assertEqual(self.sim.request("POST", self.path("services"), body).status, status)


def read(path):
    with open(path) as f:
        return f.read()


class StateDirTest(unittest.TestCase):
    def test_a_restart_keeps_objects_ca_token_port_and_audit(self):
        workdir = tempfile.mkdtemp(prefix="kubesim-state-")
        self.addCleanup(shutil.rmtree, workdir, True)
        state = os.path.join(workdir, "state")
        sim = kubesim_client.start(os.path.join(workdir, "run"), state_dir=state)
        self.addCleanup(lambda: sim.stop())
        svc = sim.must("POST", "/api/v1/namespaces/default/services", service("kept"))
        sim.must("PATCH", "/api/v1/namespaces/default/services/kept/status",
                 {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.5",
                                                           "ipMode": "Proxy"}]}}},
                 "application/merge-patch+json")
        rv = int(sim.must("GET", "/api/v1/services")["metadata"]["resourceVersion"])
        ca, token, port, kubeconfig = read(sim.ca_file), sim.token, sim.port, read(sim.kubeconfig)

        for how in ("SIGTERM", "SIGKILL"):
            with self.subTest(how):
                if how == "SIGTERM":
                    self.assertEqual(sim.stop(), 0)
                else:
                    sim.process.kill()
                    sim.process.wait(timeout=10)
                sim = kubesim_client.start(os.path.join(workdir, "run"), state_dir=state)
                self.assertEqual((sim.token, sim.port), (token, port))
                self.assertEqual(read(sim.ca_file), ca)
                self.assertEqual(read(sim.kubeconfig), kubeconfig)
                got = sim.must("GET", "/api/v1/namespaces/default/services/kept")
                self.assertEqual(got["metadata"]["uid"], svc["metadata"]["uid"])
                self.assertEqual(got["spec"]["clusterIP"], svc["spec"]["clusterIP"])
                self.assertEqual(got["status"]["loadBalancer"]["ingress"],
                                 [{"ip": "203.0.113.5", "ipMode": "Proxy"}])
                # resourceVersions go on from where they were; the watch history does not.
                listed = sim.must("GET", "/api/v1/services")
                self.assertGreaterEqual(int(listed["metadata"]["resourceVersion"]), rv)
                with sim.watch(f"/api/v1/services?watch=1&resourceVersion={rv - 1}&timeoutSeconds=5") as w:
                    self.assertEqual(w.next_event()["object"]["code"], 410)
                self.assertEqual([e["ips"] for e in sim.audit() if e["name"] == "kept"], [["203.0.113.5"]])
                # The cluster IP stays allocated.
                taken = sim.request("POST", "/api/v1/namespaces/default/services",
                                    dict(service("other"), spec=dict(service("other")["spec"],
                                                                     clusterIP=svc["spec"]["clusterIP"])))
                self.assertEqual(taken.status, 422)
                sim.must("POST", "/api/v1/namespaces/default/configmaps", configmap(f"after-{how.lower()}"))
        self.assertEqual(len(sim.must("GET", "/api/v1/namespaces/default/configmaps")["items"]), 2)


class SlowWatcherTest(SimulatorTestCase):
    sim_options = {"extra_args": ["--watch-queue", "2"]}

    def test_a_watcher_that_falls_behind_is_closed(self):
        big = "x" * 400_000
        count = 40
        with self.sim.watch(self.path("configmaps", query={
                "watch": 1, "resourceVersion": self.list_rv("configmaps"),
                "timeoutSeconds": 30})) as w:
            # ~16 MB of events that the watcher does not read: more than the socket buffers
            # and the two-event queue hold.
            for i in range(count):
                self.create("configmaps", configmap(f"big-{i}", data={"k": big}))
            received = []
            for _ in range(count + 1):
                event = w.next_event()
                if event is None:
                    break
                received.append(event["object"]["metadata"]["name"])
        self.assertIsNone(event, "the stream ends cleanly")
        self.assertLess(len(received), count)
        self.assertEqual(received, [f"big-{i}" for i in range(len(received))],
                         "what was sent is in order, without gaps")


class SeedTest(SimulatorTestCase):
    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="kubesim-seed-")
        seed = os.path.join(cls.workdir, "nodes.json")
        with open(seed, "w") as f:
            json.dump({"apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "Node",
                 "metadata": {"name": f"lb-{i}", "labels": {"type": "loadBalancer"}},
                 "status": {"addresses": [{"type": "InternalIP", "address": f"192.0.2.{i}"}]}}
                for i in (1, 2)]}, f)
        cls.sim = kubesim_client.start(cls.workdir, extra_args=["--seed", seed])

    def test_seeded_nodes_exist_with_their_status(self):
        nodes = self.sim.must("GET", "/api/v1/nodes?labelSelector=type%3DloadBalancer")
        self.assertEqual([(n["metadata"]["name"], n["status"]["addresses"][0]["address"])
                          for n in nodes["items"]], [("lb-1", "192.0.2.1"), ("lb-2", "192.0.2.2")])

    def test_protected_namespaces_cannot_be_deleted(self):
        for name in ("default", "kube-system"):
            with self.subTest(name):
                self.assertEqual(self.sim.request("DELETE", f"/api/v1/namespaces/{name}").status,
                                 403)
        self.create("configmaps", configmap("a"))
        self.sim.must("DELETE", f"/api/v1/namespaces/{self.ns}")
        self.assertEqual(self.sim.request("GET", self.path("configmaps", "a")).status, 404)


if __name__ == "__main__":
    unittest.main()
