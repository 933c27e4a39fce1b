#!/usr/bin/env python3
"""kubesim: a Kubernetes API server simulator for k8slb's tests.

Speaks enough of the kube-apiserver protocol (TLS, bearer token, discovery, CRUD, list paging,
chunked watch streams with BOOKMARK and ERROR events, merge / JSON / strategic-merge patches,
status subresources, 409 / 410 / 422 answers) for k8slb and kubectl. Standard library only.

    python3 kubesim.py --workdir DIR [--port 0] [--token TOKEN] [--window N]

Writes DIR/ca.crt, DIR/token, DIR/kubeconfig and DIR/port, then prints
`ready https://127.0.0.1:PORT`. Faults are injected over /_sim/... (see docs/simulator.md).
"""

import argparse
import base64
import collections
import copy
import datetime
import ipaddress
import json
import os
import queue
import random
import re
import secrets
import signal
import socket
import ssl
import select
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-kubesim",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.23.4",
    "compiler": "gc",
    "platform": "linux/amd64",
}

# The service CIDRs: kubeadm's default (cmd/kubeadm/app/apis/kubeadm/v1beta3/defaults.go,
# DefaultServicesSubnet = "10.96.0.0/12") and an IPv6 range at the largest the API server takes
# (cmd/kube-apiserver/app/options/validation.go: at most 20 host bits, "for 128-bit addresses,
# the mask must be >= 108"). Cluster IPs exist only inside the simulator and are never routed;
# they are handed out without enumerating the range (a /12 holds a million addresses).
CLUSTER_IP_NETWORKS = {"IPv4": ipaddress.ip_network("10.96.0.0/12"),
                       "IPv6": ipaddress.ip_network("fd00:10:96::/108")}
CLUSTER_IP_NETWORK = CLUSTER_IP_NETWORKS["IPv4"]
NODE_PORT_RANGE = (30000, 32767)
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease", "k8slb-system")
TABLE_CONTENT_TYPE = "application/json;as=Table;v=v1;g=meta.k8s.io"


# ----------------------------------------------------------------------------------------------
# Resources served


class Resource:
    """One REST resource: where it lives, what it is called, how it behaves."""

    def __init__(self, group, version, plural, kind, namespaced, short_names=(), status=False,
                 create_on_update=False, generation=None, field_labels=(), categories=()):
        self.group = group
        self.version = version
        self.plural = plural
        self.kind = kind
        self.namespaced = namespaced
        self.short_names = list(short_names)
        self.status = status                      # has a /status subresource
        self.create_on_update = create_on_update  # PUT to a missing object creates it
        self.generation = generation              # top-level fields whose change bumps generation
        self.field_labels = ("metadata.name", "metadata.namespace") + tuple(field_labels)
        self.categories = list(categories)

    @property
    def api_version(self):
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self):
        return (self.group, self.plural)

    def group_resource(self):
        return f"{self.plural}.{self.group}" if self.group else self.plural


RESOURCES = [
    Resource("", "v1", "namespaces", "Namespace", False, ["ns"], status=True,
             field_labels=("status.phase",)),
    Resource("", "v1", "services", "Service", True, ["svc"], status=True, generation=("spec",),
             field_labels=("spec.clusterIP", "spec.type"), categories=["all"]),
    Resource("", "v1", "endpoints", "Endpoints", True, ["ep"], create_on_update=True),
    Resource("", "v1", "configmaps", "ConfigMap", True, ["cm"]),
    Resource("", "v1", "events", "Event", True, ["ev"], create_on_update=True,
             field_labels=("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                           "involvedObject.uid", "involvedObject.apiVersion",
                           "involvedObject.resourceVersion", "involvedObject.fieldPath",
                           "reason", "reportingComponent", "source", "type")),
    Resource("", "v1", "nodes", "Node", False, ["no"], status=True,
             field_labels=("spec.unschedulable",)),
    # Field labels: pkg/registry/core/pod/strategy.go, ToSelectableFields.
    Resource("", "v1", "pods", "Pod", True, ["po"], status=True, categories=["all"],
             field_labels=("spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
                           "spec.serviceAccountName", "spec.hostNetwork", "status.phase",
                           "status.podIP", "status.nominatedNodeName")),
    Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True,
             generation=("endpoints", "ports", "addressType"),
             field_labels=("addressType",)),
    Resource("coordination.k8s.io", "v1", "leases", "Lease", True, create_on_update=True),
    Resource("events.k8s.io", "v1", "events", "Event", True, ["ev"], create_on_update=True,
             field_labels=("regarding.kind", "regarding.namespace", "regarding.name", "reason",
                           "type", "reportingController")),
]

GROUP_VERSIONS = collections.OrderedDict()
for _r in RESOURCES:
    GROUP_VERSIONS.setdefault((_r.group, _r.version), []).append(_r)


def find_resource(group, version, plural):
    for r in RESOURCES:
        if r.group == group and r.version == version and r.plural == plural:
            return r
    return None


# ----------------------------------------------------------------------------------------------
# Errors as metav1.Status


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None, headers=None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self):
        s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
             "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            s["details"] = self.details
        return s


def _details(resource, name, causes=None):
    d = {}
    if name:
        d["name"] = name
    if resource.group:
        d["group"] = resource.group
    d["kind"] = resource.plural
    if causes:
        d["causes"] = causes
    return d


def not_found(resource, name):
    return ApiError(404, "NotFound", f'{resource.group_resource()} "{name}" not found',
                    _details(resource, name))


def already_exists(resource, name):
    return ApiError(409, "AlreadyExists", f'{resource.group_resource()} "{name}" already exists',
                    _details(resource, name))


def conflict(resource, name):
    return ApiError(409, "Conflict",
                    f'Operation cannot be fulfilled on {resource.group_resource()} "{name}": the '
                    "object has been modified; please apply your changes to the latest version "
                    "and try again", _details(resource, name))


def bad_request(message):
    return ApiError(400, "BadRequest", message)


def expired(message):
    return ApiError(410, "Expired", message)


class FieldError:
    """One validation failure, printed the way k8s.io/apimachinery field.Error prints."""

    def __init__(self, field, kind, value=None, detail=""):
        self.field = field
        self.kind = kind  # Required, Invalid, Unsupported, Duplicate, Forbidden
        self.value = value
        self.detail = detail

    def cause_type(self):
        return {"Required": "FieldValueRequired", "Invalid": "FieldValueInvalid",
                "Unsupported": "FieldValueNotSupported", "Duplicate": "FieldValueDuplicate",
                "Forbidden": "FieldValueForbidden", "TooLong": "FieldValueTooLong"}[self.kind]

    def text(self):
        # k8s.io/apimachinery/pkg/util/validation/field/errors.go, Error.ErrorBody: Required,
        # Forbidden and TooLong print no value.
        if self.kind == "Required":
            head = "Required value"
        elif self.kind == "Forbidden":
            head = "Forbidden"
        elif self.kind == "TooLong":
            head = "Too long"
        else:
            head = f"{self.kind} value: {json.dumps(self.value)}"
        return f"{head}: {self.detail}" if self.detail else head

    def __str__(self):
        return f"{self.field}: {self.text()}"


def invalid(resource, name, errors):
    causes = [{"reason": e.cause_type(), "message": e.text(), "field": e.field} for e in errors]
    details = {"name": name, "group": resource.group, "kind": resource.kind, "causes": causes}
    listing = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(str(e) for e in errors) + "]"
    return ApiError(422, "Invalid", f'{resource.kind} "{name}" is invalid: {listing}', details)


# ----------------------------------------------------------------------------------------------
# Selectors

LABEL_KEY_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
DNS_1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024  # apimachinery api/validation TotalAnnotationSizeLimitB
MAX_CONFIGMAP_SIZE = 1024 * 1024  # k8s.io/kubernetes pkg/apis/core/types.go, MaxSecretSize
CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def label_key_problem(key):
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not DNS_1123_SUBDOMAIN.match(prefix)):
        return "prefix part must be a lowercase RFC 1123 subdomain"
    if not name or len(name) > 63 or not LABEL_KEY_NAME.match(name):
        return ("name part must consist of alphanumeric characters, '-', '_' or '.', and must "
                "start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
                "'123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?"
                "[A-Za-z0-9]')")
    return None


def label_value_problem(value):
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not LABEL_VALUE.match(value):
        return ("a valid label must be an empty string or consist of alphanumeric characters, "
                "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
                "'MyValue',  or 'my_value',  or '12345', regex used for validation is "
                "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
    return None


def split_top_level(text):
    """Splits on commas outside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


SET_REQUIREMENT = re.compile(r"^(\S+)\s+(in|notin)\s*\((.*)\)$")
EQ_REQUIREMENT = re.compile(r"^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$")


def parse_label_selector(text):
    """Returns a predicate over a labels dict. Raises ApiError 400 on a malformed selector."""
    requirements = []
    for part in split_top_level(text or ""):
        m = SET_REQUIREMENT.match(part)
        if m:
            key, op, values = m.group(1), m.group(2), [v.strip() for v in m.group(3).split(",")]
            values = [v for v in values if v]
            if not values:
                raise bad_request(f"unable to parse requirement: values for {op} must not be empty")
        else:
            m = EQ_REQUIREMENT.match(part)
            if m:
                key, op, values = m.group(1), m.group(2), [m.group(3)]
            elif part.startswith("!"):
                key, op, values = part[1:].strip(), "!", []
            else:
                key, op, values = part, "exists", []
        problem = label_key_problem(key)
        if problem:
            raise bad_request(f'unable to parse requirement: <nil>: Invalid value: "{key}": '
                              f"{problem}")
        for v in values:
            problem = label_value_problem(v)
            if problem:
                raise bad_request(f'unable to parse requirement: values[0][{key}]: Invalid value: '
                                  f'"{v}": {problem}')
        requirements.append((key, op, values))

    def matches(labels):
        labels = labels or {}
        for key, op, values in requirements:
            has = key in labels
            if op in ("=", "==", "in"):
                if not has or labels[key] not in values:
                    return False
            elif op in ("!=", "notin"):
                if has and labels[key] in values:
                    return False
            elif op == "exists":
                if not has:
                    return False
            elif op == "!":
                if has:
                    return False
        return True

    return matches


def field_value(obj, path):
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if isinstance(cur, dict):
        return ""
    return str(cur)


def parse_field_selector(resource, text):
    requirements = []
    for part in split_top_level(text or ""):
        m = re.match(r"^([^=!]+?)\s*(==|=|!=)\s*(.*)$", part)
        if not m:
            raise bad_request(f'invalid selector: \'{text}\'; can\'t understand \'{part}\'')
        key, op, value = m.group(1).strip(), m.group(2), m.group(3).strip()
        if key not in resource.field_labels:
            raise bad_request(f'field label not supported: {key}')
        requirements.append((key, op, value))

    def matches(obj):
        for key, op, value in requirements:
            actual = field_value(obj, key)
            if key == "source" and not actual:
                actual = field_value(obj, "source.component")
            if (actual == value) != (op != "!="):
                return False
        return True

    return matches


# ----------------------------------------------------------------------------------------------
# Patches


def merge_patch(target, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer_parts(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"JSON pointer must start with '/': {path}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve_parent(doc, parts):
    cur = doc
    for p in parts[:-1]:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
            cur = cur[int(p)]
        else:
            raise ApiError(422, "Invalid", f"doc is missing path: /{'/'.join(parts)}")
    return cur


def _get_pointer(doc, parts):
    cur = doc
    for p in parts:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
            cur = cur[int(p)]
        else:
            raise ApiError(422, "Invalid", f"doc is missing path: /{'/'.join(parts)}")
    return cur


def json_patch(doc, operations):
    """RFC 6902."""
    if not isinstance(operations, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)
    for op in operations:
        kind = op.get("op")
        parts = _pointer_parts(op.get("path", ""))

        def add(parts, value):
            nonlocal doc
            if not parts:
                doc = value
                return
            parent = _resolve_parent(doc, parts)
            last = parts[-1]
            if isinstance(parent, dict):
                parent[last] = value
            elif isinstance(parent, list):
                if last == "-":
                    parent.append(value)
                elif last.isdigit() and int(last) <= len(parent):
                    parent.insert(int(last), value)
                else:
                    raise ApiError(422, "Invalid", f"add operation index out of bounds: {last}")
            else:
                raise ApiError(422, "Invalid", "add operation on a scalar")

        def remove(parts):
            parent = _resolve_parent(doc, parts)
            last = parts[-1] if parts else ""
            if isinstance(parent, dict) and last in parent:
                return parent.pop(last)
            if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
                return parent.pop(int(last))
            raise ApiError(422, "Invalid",
                           f"{kind} operation does not apply: doc is missing path: "
                           f"{op.get('path')}")

        if kind == "add":
            add(parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            remove(parts)
        elif kind == "replace":
            remove(parts)
            add(parts, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            src = _pointer_parts(op.get("from", ""))
            value = copy.deepcopy(_get_pointer(doc, src))
            if kind == "move":
                remove(src)
            add(parts, value)
        elif kind == "test":
            if _get_pointer(doc, parts) != op.get("value"):
                raise ApiError(422, "Invalid",
                               f"testing value {op.get('path')} failed: test failed")
        else:
            raise bad_request(f"Unexpected kind: {kind}")
    return doc


# Merge keys of lists that Kubernetes' strategic merge patch merges instead of replacing,
# by dotted path (list indices left out) per kind. Other lists are replaced, as for types
# without a patchMergeKey.
STRATEGIC_LISTS = {
    "Service": {"spec.ports": "port", "status.conditions": "type",
                "metadata.ownerReferences": "uid", "metadata.finalizers": None},
    "Node": {"status.conditions": "type", "status.addresses": "type", "spec.taints": "key",
             "metadata.ownerReferences": "uid", "metadata.finalizers": None,
             "spec.podCIDRs": None},
    "*": {"metadata.ownerReferences": "uid", "metadata.finalizers": None,
          "status.conditions": "type"},
}


def strategic_merge_patch(target, patch, kind):
    lists = dict(STRATEGIC_LISTS["*"])
    lists.update(STRATEGIC_LISTS.get(kind, {}))
    return _smp_map(target if isinstance(target, dict) else {}, patch, "", lists)


def _smp_map(target, patch, path, lists):
    if not isinstance(patch, dict):
        raise bad_request("unable to find api field in struct for the patch")
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(target)
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            if isinstance(result.get(name), list):
                result[name] = [x for x in result[name] if x not in value]
            continue
        sub = f"{path}.{key}" if path else key
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            if value.get("$patch") == "delete":
                result.pop(key, None)
            else:
                merged = _smp_map(result.get(key) if isinstance(result.get(key), dict) else {},
                                  value, sub, lists)
                result[key] = merged
        elif isinstance(value, list) and sub in lists and isinstance(result.get(key), list):
            result[key] = _smp_list(result[key], value, lists[sub], sub, lists)
        elif isinstance(value, list):
            result[key] = [_strip_directives(v) for v in value
                           if not (isinstance(v, dict) and v.get("$patch") == "delete")]
        else:
            result[key] = copy.deepcopy(value)
    for key, order in patch.items():
        if key.startswith("$setElementOrder/"):
            name = key.split("/", 1)[1]
            sub = f"{path}.{name}" if path else name
            if isinstance(result.get(name), list) and sub in lists:
                result[name] = _smp_order(result[name], order, lists[sub])
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _strip_directives(value):
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _smp_list(current, patch, merge_key, path, lists):
    if merge_key is None:  # list of primitives merged as a set
        result = list(current)
        for v in patch:
            if v not in result:
                result.append(v)
        return result
    if any(isinstance(v, dict) and v.get("$patch") == "replace" for v in patch):
        return [_strip_directives(v) for v in patch
                if not (isinstance(v, dict) and v.get("$patch") == "replace")]
    result = [copy.deepcopy(v) for v in current]
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise bad_request(f"map: {item} does not contain declared merge key: {merge_key}")
        index = next((i for i, v in enumerate(result)
                      if isinstance(v, dict) and v.get(merge_key) == item[merge_key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
        elif index is None:
            result.append(_strip_directives(item))
        else:
            result[index] = _smp_map(result[index], item, path, lists)
    return result


def _smp_order(items, order, merge_key):
    if merge_key is None or not isinstance(order, list):
        return items
    keys = [o.get(merge_key) for o in order if isinstance(o, dict)]
    rank = {k: i for i, k in enumerate(keys)}
    ordered = sorted((v for v in items if v.get(merge_key) in rank),
                     key=lambda v: rank[v.get(merge_key)])
    return ordered + [v for v in items if v.get(merge_key) not in rank]


# ----------------------------------------------------------------------------------------------
# Time and tables


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def human_age(timestamp):
    try:
        then = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        return "<unknown>"
    s = int((datetime.datetime.now(datetime.timezone.utc) - then).total_seconds())
    s = max(s, 0)
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    return f"{d}d"


def _col(name, kind="string", priority=0, fmt="", description=""):
    return {"name": name, "type": kind, "format": fmt, "description": description,
            "priority": priority}


def _service_row(o):
    spec, status = o.get("spec", {}), o.get("status", {})
    stype = spec.get("type", "ClusterIP")
    ext = [i.get("ip") or i.get("hostname") for i in
           status.get("loadBalancer", {}).get("ingress", []) or []]
    ext = [e for e in ext if e] + list(spec.get("externalIPs", []) or [])
    if stype == "ExternalName":
        external = spec.get("externalName", "<none>")
    elif ext:
        external = ",".join(ext)
    elif stype == "LoadBalancer":
        external = "<pending>"
    else:
        external = "<none>"
    ports = []
    for p in spec.get("ports", []) or []:
        if p.get("nodePort"):
            ports.append(f"{p.get('port')}:{p['nodePort']}/{p.get('protocol', 'TCP')}")
        else:
            ports.append(f"{p.get('port')}/{p.get('protocol', 'TCP')}")
    selector = spec.get("selector") or {}
    return [o["metadata"]["name"], stype, spec.get("clusterIP") or "<none>", external,
            ",".join(ports) or "<none>", human_age(o["metadata"].get("creationTimestamp")),
            ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>"]


def _node_row(o):
    status = o.get("status", {})
    ready = "Unknown"
    for c in status.get("conditions", []) or []:
        if c.get("type") == "Ready":
            ready = "Ready" if c.get("status") == "True" else "NotReady"
    if o.get("spec", {}).get("unschedulable"):
        ready += ",SchedulingDisabled"
    labels = o["metadata"].get("labels", {}) or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
    addr = {a.get("type"): a.get("address") for a in status.get("addresses", []) or []}
    info = status.get("nodeInfo", {}) or {}
    return [o["metadata"]["name"], ready, ",".join(roles) or "<none>",
            human_age(o["metadata"].get("creationTimestamp")), info.get("kubeletVersion", ""),
            addr.get("InternalIP", "<none>"), addr.get("ExternalIP", "<none>"),
            info.get("osImage", "<unknown>"), info.get("kernelVersion", "<unknown>"),
            info.get("containerRuntimeVersion", "<unknown>")]


def _pod_row(o):
    """Columns of pkg/printers/internalversion/printers.go, printPod (simplified: no
    container states beyond ready and restart counts)."""
    spec, status = o.get("spec", {}), o.get("status", {})
    containers = spec.get("containers") or []
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount", 0)) for c in statuses)
    phase = status.get("reason") or status.get("phase") or "Pending"
    if o["metadata"].get("deletionTimestamp"):
        phase = "Terminating"
    return [o["metadata"]["name"], f"{ready}/{len(containers)}", phase, restarts,
            human_age(o["metadata"].get("creationTimestamp")), status.get("podIP") or "<none>",
            spec.get("nodeName") or "<none>", status.get("nominatedNodeName") or "<none>",
            "<none>"]


TABLES = {
    "Pod": ([_col("Name", fmt="name"), _col("Ready"), _col("Status"), _col("Restarts",
             "string"), _col("Age"), _col("IP", priority=1), _col("Node", priority=1),
             _col("Nominated Node", priority=1), _col("Readiness Gates", priority=1)],
            _pod_row),
    "Service": ([_col("Name", fmt="name"), _col("Type"), _col("Cluster-IP"), _col("External-IP"),
                 _col("Port(s)"), _col("Age"), _col("Selector", priority=1)], _service_row),
    "Node": ([_col("Name", fmt="name"), _col("Status"), _col("Roles"), _col("Age"),
              _col("Version"), _col("Internal-IP", priority=1), _col("External-IP", priority=1),
              _col("OS-Image", priority=1), _col("Kernel-Version", priority=1),
              _col("Container-Runtime", priority=1)], _node_row),
    "Namespace": ([_col("Name", fmt="name"), _col("Status"), _col("Age")],
                  lambda o: [o["metadata"]["name"], o.get("status", {}).get("phase", "Active"),
                             human_age(o["metadata"].get("creationTimestamp"))]),
    "ConfigMap": ([_col("Name", fmt="name"), _col("Data", "integer"), _col("Age")],
                  lambda o: [o["metadata"]["name"],
                             len(o.get("data", {}) or {}) + len(o.get("binaryData", {}) or {}),
                             human_age(o["metadata"].get("creationTimestamp"))]),
    "EndpointSlice": ([_col("Name", fmt="name"), _col("AddressType"), _col("Ports"),
                       _col("Endpoints"), _col("Age")],
                      lambda o: [o["metadata"]["name"], o.get("addressType", ""),
                                 ",".join(str(p.get("port", "")) for p in o.get("ports") or [])
                                 or "<unset>",
                                 ",".join(a for e in o.get("endpoints") or []
                                          for a in e.get("addresses", [])) or "<unset>",
                                 human_age(o["metadata"].get("creationTimestamp"))]),
    "Lease": ([_col("Name", fmt="name"), _col("Holder"), _col("Age")],
              lambda o: [o["metadata"]["name"], o.get("spec", {}).get("holderIdentity", ""),
                         human_age(o["metadata"].get("creationTimestamp"))]),
}


def table_for(resource, objects, list_rv, include_object):
    columns, row = TABLES.get(resource.kind, ([_col("Name", fmt="name"), _col("Age")],
                                              lambda o: [o["metadata"]["name"], human_age(
                                                  o["metadata"].get("creationTimestamp"))]))
    rows = []
    for o in objects:
        r = {"cells": row(o)}
        if include_object == "Object":
            r["object"] = o
        elif include_object != "None":
            r["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                           "metadata": copy.deepcopy(o["metadata"])}
        rows.append(r)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": list_rv}, "columnDefinitions": columns, "rows": rows}


# ----------------------------------------------------------------------------------------------
# Validation and defaulting


def validate_metadata(resource, obj, errors):
    meta = obj.get("metadata", {})
    name = meta.get("name", "")
    pattern = DNS_1035_LABEL if resource.kind == "Service" else (
        DNS_1123_LABEL if resource.kind == "Namespace" else DNS_1123_SUBDOMAIN)
    if resource.kind == "Event":
        pattern = None  # event names are generated from object names and may be long
    if not name:
        errors.append(FieldError("metadata.name", "Required", detail="name or generateName is "
                                 "required"))
    elif pattern is not None and (not pattern.match(name) or
                                  len(name) > (63 if pattern is not DNS_1123_SUBDOMAIN else 253)):
        if pattern is DNS_1035_LABEL:
            detail = ("a DNS-1035 label must consist of lower case alphanumeric characters or "
                      "'-', start with an alphabetic character, and end with an alphanumeric "
                      "character (e.g. 'my-name',  or 'abc-123', regex used for validation is "
                      "'[a-z]([-a-z0-9]*[a-z0-9])?')")
        else:
            detail = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                      "characters, '-' or '.', and must start and end with an alphanumeric "
                      "character (e.g. 'example.com', regex used for validation is "
                      "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
        errors.append(FieldError("metadata.name", "Invalid", name, detail))
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict):
        errors.append(FieldError("metadata.labels", "Invalid", labels, "must be a map"))
        labels = {}
    for k, v in labels.items():
        problem = label_key_problem(k)
        if problem:
            errors.append(FieldError("metadata.labels", "Invalid", k, problem))
        if not isinstance(v, str):
            errors.append(FieldError(f"metadata.labels", "Invalid", v, "must be a string"))
            continue
        problem = label_value_problem(v)
        if problem:
            errors.append(FieldError("metadata.labels", "Invalid", v, problem))
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, dict) or any(not isinstance(v, str)
                                                for v in annotations.values()):
        errors.append(FieldError("metadata.annotations", "Invalid", annotations,
                                 "must be a map of strings"))
    else:
        # k8s.io/apimachinery/pkg/api/validation/objectmeta.go, ValidateAnnotations: "The rule
        # is QualifiedName except that case doesn't matter, so convert to lowercase before
        # checking" (so `loadBalancer/pool` is a valid key); the error names the key as given.
        for k in annotations:
            problem = label_key_problem(k.lower())
            if problem:
                errors.append(FieldError("metadata.annotations", "Invalid", k, problem))
        # ValidateAnnotationsSize: keys and values together at most TotalAnnotationSizeLimitB
        # (256 KiB), reported as field.TooLong(fldPath, "", TotalAnnotationSizeLimitB).
        if sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items()) > \
                TOTAL_ANNOTATION_SIZE_LIMIT:
            errors.append(FieldError("metadata.annotations", "TooLong", "",
                                     f"must have at most {TOTAL_ANNOTATION_SIZE_LIMIT} bytes"))


def _is_ip(text):
    """Whether the API server's validation takes `text` as an IP address. It parses with
    k8s.io/utils/net ParseIPSloppy (Go's net.ParseIP before Go 1.17), which also accepts IPv4
    octets with leading zeros ("010.0.0.1"); Python's ipaddress refuses those."""
    if not isinstance(text, str):
        return False
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    parts = text.split(".")
    return len(parts) == 4 and all(p.isdigit() and p.isascii() and len(p) <= 3 and
                                   int(p) <= 255 for p in parts)


def validate_service(obj, errors):
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errors.append(FieldError("spec", "Required"))
        return
    stype = spec.get("type", "ClusterIP")
    types = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
    if stype not in types:
        errors.append(FieldError("spec.type", "Unsupported", stype,
                                 "supported values: " + ", ".join(f'"{t}"' for t in types)))
    ports = spec.get("ports") or []
    if not isinstance(ports, list):
        errors.append(FieldError("spec.ports", "Invalid", ports, "must be a list"))
        ports = []
    if stype != "ExternalName" and not ports and spec.get("clusterIP") != "None":
        errors.append(FieldError("spec.ports", "Required"))
    if stype == "ExternalName" and not spec.get("externalName"):
        errors.append(FieldError("spec.externalName", "Required"))
    names, pairs = set(), set()
    for i, p in enumerate(ports):
        field = f"spec.ports[{i}]"
        if not isinstance(p, dict):
            errors.append(FieldError(field, "Invalid", p, "must be an object"))
            continue
        name = p.get("name", "")
        if len(ports) > 1 and not name:
            errors.append(FieldError(f"{field}.name", "Required"))
        elif name:
            if name in names:
                errors.append(FieldError(f"{field}.name", "Duplicate", name))
            elif not DNS_1123_LABEL.match(name) or len(name) > 63:
                errors.append(FieldError(f"{field}.name", "Invalid", name,
                                         "a lowercase RFC 1123 label must consist of lower case "
                                         "alphanumeric characters or '-', and must start and end "
                                         "with an alphanumeric character"))
            names.add(name)
        port = p.get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            if port is None:
                errors.append(FieldError(f"{field}.port", "Required"))
            else:
                errors.append(FieldError(f"{field}.port", "Invalid", port,
                                         "must be between 1 and 65535, inclusive"))
        protocol = p.get("protocol", "TCP")
        if protocol not in ("SCTP", "TCP", "UDP"):
            errors.append(FieldError(f"{field}.protocol", "Unsupported", protocol,
                                     'supported values: "SCTP", "TCP", "UDP"'))
        if (port, protocol) in pairs:
            errors.append(FieldError(field, "Duplicate", {"port": port, "protocol": protocol}))
        pairs.add((port, protocol))
        target = p.get("targetPort")
        if isinstance(target, int) and not isinstance(target, bool) and not 1 <= target <= 65535:
            errors.append(FieldError(f"{field}.targetPort", "Invalid", target,
                                     "must be between 1 and 65535, inclusive"))
        node_port = p.get("nodePort")
        if node_port is not None:
            if stype not in ("NodePort", "LoadBalancer"):
                errors.append(FieldError(f"{field}.nodePort", "Forbidden", detail="may not be used "
                                         "when `type` is 'ClusterIP'"))
            elif not isinstance(node_port, int) or not NODE_PORT_RANGE[0] <= node_port <= \
                    NODE_PORT_RANGE[1]:
                errors.append(FieldError(f"{field}.nodePort", "Invalid", node_port,
                                         "provided port is not in the valid range. The range of "
                                         "valid ports is 30000-32767"))
    lb_ip = spec.get("loadBalancerIP")
    if lb_ip and not _is_ip(lb_ip):
        errors.append(FieldError("spec.loadBalancerIP", "Invalid", lb_ip,
                                 "must be a valid IP address"))
    for i, ip in enumerate(spec.get("externalIPs") or []):
        if not _is_ip(ip):
            errors.append(FieldError(f"spec.externalIPs[{i}]", "Invalid", ip,
                                     "must be a valid IP address"))
    cip = spec.get("clusterIP")
    if cip and cip != "None" and not _is_ip(cip):
        errors.append(FieldError("spec.clusterIPs[0]", "Invalid", cip,
                                 "must be empty, 'None', or a valid IP address"))
    for key in ("externalTrafficPolicy", "internalTrafficPolicy"):
        v = spec.get(key)
        if v is not None and v not in ("Cluster", "Local"):
            errors.append(FieldError(f"spec.{key}", "Unsupported", v,
                                     'supported values: "Cluster", "Local"'))


DNS_1123_SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")


def dns_1123_subdomain_problems(value):
    """k8s.io/apimachinery/pkg/util/validation/validation.go, IsDNS1123Subdomain."""
    problems = []
    if len(value) > 253:
        problems.append("must be no more than 253 characters")
    if not DNS_1123_SUBDOMAIN.match(value):
        problems.append(DNS_1123_SUBDOMAIN_MESSAGE)
    return problems


def default_load_balancer_status(obj):
    """pkg/apis/core/v1/defaults.go, SetDefaults_Service: with the LoadBalancerIPMode feature
    (GA and locked on since 1.32), an ingress entry of a LoadBalancer Service that has an `ip`
    and no `ipMode` gets `ipMode: VIP`."""
    if (obj.get("spec") or {}).get("type") != "LoadBalancer":
        return
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")
    for entry in ingress if isinstance(ingress, list) else []:
        if isinstance(entry, dict) and entry.get("ip") and entry.get("ipMode") is None:
            entry["ipMode"] = "VIP"


def validate_load_balancer_status(obj, errors):
    """pkg/apis/core/validation/validation.go, ValidateLoadBalancerStatus (features at their
    1.32 defaults: LoadBalancerIPMode on, AllowServiceLBStatusOnNonLB off)."""
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    if not isinstance(ingress, list):
        errors.append(FieldError("status.loadBalancer.ingress", "Invalid", ingress,
                                 "must be a list"))
        return
    if ingress and (obj.get("spec") or {}).get("type", "ClusterIP") != "LoadBalancer":
        errors.append(FieldError("status.loadBalancer.ingress", "Forbidden",
                                 detail="may only be used when `spec.type` is 'LoadBalancer'"))
        return
    for i, entry in enumerate(ingress):
        field = f"status.loadBalancer.ingress[{i}]"
        if not isinstance(entry, dict):
            errors.append(FieldError(field, "Invalid", entry, "must be an object"))
            continue
        ip, hostname, mode = entry.get("ip") or "", entry.get("hostname") or "", \
            entry.get("ipMode")
        if ip and not _is_ip(ip):
            errors.append(FieldError(f"{field}.ip", "Invalid", ip, "must be a valid IP address"))
        # Defaulting (above) gives every entry with an ip its ipMode, so "Required" is never
        # reached through the API; ipMode without ip is forbidden, and only VIP or Proxy.
        if mode is None and ip:
            errors.append(FieldError(f"{field}.ipMode", "Required",
                                     detail="must be specified when `ip` is set"))
        elif mode is not None and not ip:
            errors.append(FieldError(f"{field}.ipMode", "Forbidden",
                                     detail="may not be specified when `ip` is not set"))
        elif mode is not None and mode not in ("VIP", "Proxy"):
            errors.append(FieldError(f"{field}.ipMode", "Unsupported", mode,
                                     'supported values: "Proxy", "VIP"'))
        if hostname:
            for problem in dns_1123_subdomain_problems(hostname):
                errors.append(FieldError(f"{field}.hostname", "Invalid", hostname, problem))
            if _is_ip(hostname):
                errors.append(FieldError(f"{field}.hostname", "Invalid", hostname,
                                         "must be a DNS name, not an IP address"))


def validate_pod(obj, errors):
    """The parts of pkg/apis/core/validation/validation.go ValidatePodCreate/ValidatePodSpec
    that cost little: containers required, each with a DNS-1123 label name (unique) and an
    image, ports in range, known restartPolicy and dnsPolicy."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errors.append(FieldError("spec.containers", "Required"))
        return
    containers = spec.get("containers")
    if not containers:
        errors.append(FieldError("spec.containers", "Required"))
    names = set()
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(kind) or []):
            field = f"spec.{kind}[{i}]"
            if not isinstance(c, dict):
                errors.append(FieldError(field, "Invalid", c, "must be an object"))
                continue
            name = c.get("name") or ""
            if not name:
                errors.append(FieldError(f"{field}.name", "Required"))
            elif name in names:
                errors.append(FieldError(f"{field}.name", "Duplicate", name))
            elif not DNS_1123_LABEL.match(name) or len(name) > 63:
                errors.append(FieldError(f"{field}.name", "Invalid", name,
                                         "a lowercase RFC 1123 label must consist of lower case "
                                         "alphanumeric characters or '-', and must start and end "
                                         "with an alphanumeric character (e.g. 'my-name',  or "
                                         "'123-abc', regex used for validation is "
                                         "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"))
            names.add(name)
            if not (c.get("image") or "").strip():
                errors.append(FieldError(f"{field}.image", "Required"))
            for j, port in enumerate(c.get("ports") or []):
                number = port.get("containerPort") if isinstance(port, dict) else None
                if not isinstance(number, int) or not 1 <= number <= 65535:
                    errors.append(FieldError(f"{field}.ports[{j}].containerPort", "Invalid",
                                             number, "must be between 1 and 65535, inclusive"))
    for key, allowed in (("restartPolicy", ("Always", "OnFailure", "Never")),
                         ("dnsPolicy", ("ClusterFirst", "ClusterFirstWithHostNet", "Default",
                                        "None"))):
        value = spec.get(key)
        if value is not None and value not in allowed:
            errors.append(FieldError(f"spec.{key}", "Unsupported", value, "supported values: " +
                                     ", ".join(f'"{a}"' for a in sorted(allowed))))


def default_pod(obj):
    """pkg/apis/core/v1/defaults.go (SetDefaults_PodSpec, SetDefaults_Container,
    SetDefaults_ContainerPort) and pkg/registry/core/pod/strategy.go PrepareForCreate: the
    status a client sends on create is replaced by phase Pending and the QoS class (kubelet
    sets the rest through /status)."""
    spec = obj.setdefault("spec", {})
    for key, value in (("restartPolicy", "Always"), ("dnsPolicy", "ClusterFirst"),
                       ("terminationGracePeriodSeconds", 30),
                       ("schedulerName", "default-scheduler"), ("securityContext", {}),
                       ("enableServiceLinks", True), ("preemptionPolicy", "PreemptLowerPriority"),
                       ("priority", 0)):
        spec.setdefault(key, value)
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        if isinstance(c, dict):
            image = c.get("image") or ""
            tag = image.rsplit("/", 1)[-1].partition("@")[0].partition(":")[2]
            c.setdefault("imagePullPolicy", "Always" if "@" not in image and
                         tag in ("", "latest") else "IfNotPresent")
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            c.setdefault("resources", {})
            for port in c.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")
    obj["status"] = {"phase": "Pending", "qosClass": pod_qos_class(spec)}


def pod_grace_period(pod, options):
    """pkg/registry/core/pod/strategy.go, CheckGracefulDelete: the request's
    gracePeriodSeconds, else the pod's terminationGracePeriodSeconds; 0 for a pod never
    scheduled or already finished."""
    grace = (options or {}).get("gracePeriodSeconds")
    if grace is None:
        grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
    if not (pod.get("spec") or {}).get("nodeName") or \
            (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
        grace = 0
    return max(0, int(grace or 0))


def pod_qos_class(spec):
    """pkg/apis/core/helper/qos/qos.go, GetPodQOS, for cpu and memory."""
    containers = [c for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
                  if isinstance(c, dict)]
    requests = [c.get("resources", {}).get("requests") or {} for c in containers]
    limits = [c.get("resources", {}).get("limits") or {} for c in containers]
    if not any(r.get(k) for r in requests + limits for k in ("cpu", "memory")):
        return "BestEffort"
    guaranteed = all(l.get(k) and (r.get(k) in (None, l.get(k)))
                     for r, l in zip(requests, limits) for k in ("cpu", "memory"))
    return "Guaranteed" if guaranteed else "Burstable"


def validate_configmap(obj, errors):
    """pkg/apis/core/validation/validation.go, ValidateConfigMap: keys as IsConfigMapKey
    (apimachinery util/validation), no key in both data and binaryData, and the values
    together (binaryData decoded) at most core.MaxSecretSize, 1 MiB, reported as
    field.TooLong(field.NewPath(""), ...), which prints its field as "[]"."""
    total = 0
    data = obj.get("data") or {}
    binary = obj.get("binaryData") or {}
    for bag, values in (("data", data), ("binaryData", binary)):
        if not isinstance(values, dict):
            errors.append(FieldError(bag, "Invalid", values, "must be a map"))
            continue
        for key, value in values.items():
            for problem in configmap_key_problems(key):
                errors.append(FieldError(f"{bag}[{key}]", "Invalid", key, problem))
            if bag == "data" and isinstance(binary, dict) and key in binary:
                errors.append(FieldError(f"data[{key}]", "Invalid", key,
                                         "duplicate of key present in binaryData"))
            if bag == "data":
                total += len(value.encode()) if isinstance(value, str) else 0
            else:
                try:
                    total += len(base64.b64decode(value or "", validate=True))
                except (TypeError, ValueError):
                    errors.append(FieldError(f"binaryData[{key}]", "Invalid", "",
                                             "illegal base64 data"))
    if total > MAX_CONFIGMAP_SIZE:
        errors.append(FieldError("[]", "TooLong", "",
                                 f"must have at most {MAX_CONFIGMAP_SIZE} bytes"))


def configmap_key_problems(key):
    """k8s.io/apimachinery/pkg/util/validation/validation.go, IsConfigMapKey."""
    problems = []
    if len(key) > 253:
        problems.append("must be no more than 253 characters")
    if not CONFIGMAP_KEY.match(key):
        problems.append("a valid config key must consist of alphanumeric characters, '-', '_' "
                        "or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used "
                        "for validation is '[-._a-zA-Z0-9]+')")
    if key == ".":
        problems.append("must not be '.'")
    elif key == "..":
        problems.append("must not be '..'")
    elif key.startswith(".."):
        problems.append("must not start with '..'")
    return problems


def validate_lease(obj, errors):
    spec = obj.get("spec") or {}
    for key in ("leaseDurationSeconds", "leaseTransitions"):
        v = spec.get(key)
        if v is not None and (not isinstance(v, int) or v < 0 or
                              (key == "leaseDurationSeconds" and v == 0)):
            errors.append(FieldError(f"spec.{key}", "Invalid", v, "must be greater than 0"))


def validate_event(obj, errors):
    involved = obj.get("involvedObject")
    if isinstance(involved, dict) and involved.get("namespace"):
        namespace = obj.get("metadata", {}).get("namespace")
        if involved["namespace"] != namespace:
            errors.append(FieldError("involvedObject.namespace", "Invalid", involved["namespace"],
                                     "does not match event.namespace"))
    etype = obj.get("type")
    if etype is not None and etype not in ("Normal", "Warning"):
        errors.append(FieldError("type", "Unsupported", etype,
                                 'supported values: "Normal", "Warning"'))


def validate_endpointslice(obj, errors):
    at = obj.get("addressType")
    if at not in ("IPv4", "IPv6", "FQDN"):
        if at is None:
            errors.append(FieldError("addressType", "Required"))
        else:
            errors.append(FieldError("addressType", "Unsupported", at,
                                     'supported values: "FQDN", "IPv4", "IPv6"'))
    for i, e in enumerate(obj.get("endpoints") or []):
        addrs = e.get("addresses") or []
        if not addrs:
            errors.append(FieldError(f"endpoints[{i}].addresses", "Required"))
        for j, a in enumerate(addrs):
            if at in ("IPv4", "IPv6") and (not _is_ip(a) or
                                          ipaddress.ip_address(a).version != int(at[-1])):
                errors.append(FieldError(f"endpoints[{i}].addresses[{j}]", "Invalid", a,
                                         f"must be a valid {at} address"))


# Known fields, for the kinds whose unknown fields matter to k8slb's tests. The real server
# decodes into typed structs, so an unknown field is dropped (or, with fieldValidation=Strict,
# rejected); "*" maps any key (labels, selector), None means "any value, not checked".
OBJECT_META = {k: None for k in (
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
    "annotations", "ownerReferences", "finalizers", "managedFields")}
SERVICE_PORT = {k: None for k in ("name", "protocol", "appProtocol", "port", "targetPort",
                                  "nodePort")}
LOAD_BALANCER_INGRESS = {"ip": None, "hostname": None, "ipMode": None, "ports": None}
SCHEMAS = {
    "Service": {
        "apiVersion": None, "kind": None, "metadata": OBJECT_META,
        "spec": dict({k: None for k in (
            "selector", "clusterIP", "clusterIPs", "type", "externalIPs", "sessionAffinity",
            "loadBalancerIP", "loadBalancerSourceRanges", "externalName",
            "externalTrafficPolicy", "healthCheckNodePort", "publishNotReadyAddresses",
            "sessionAffinityConfig", "ipFamilies", "ipFamilyPolicy",
            "allocateLoadBalancerNodePorts", "loadBalancerClass", "internalTrafficPolicy",
            "trafficDistribution")}, ports=[SERVICE_PORT]),
        "status": {"loadBalancer": {"ingress": [LOAD_BALANCER_INGRESS]}, "conditions": None},
    },
    "Lease": {
        "apiVersion": None, "kind": None, "metadata": OBJECT_META,
        "spec": {k: None for k in ("holderIdentity", "leaseDurationSeconds", "acquireTime",
                                   "renewTime", "leaseTransitions", "strategy",
                                   "preferredHolder")},
    },
    "ConfigMap": {"apiVersion": None, "kind": None, "metadata": OBJECT_META, "data": None,
                  "binaryData": None, "immutable": None},
    # Top-level fields only (k8s.io/api core/v1 and discovery/v1 types.go); what is below
    # them is kept as given.
    "Pod": {"apiVersion": None, "kind": None, "metadata": OBJECT_META, "spec": None,
            "status": None},
    "Namespace": {"apiVersion": None, "kind": None, "metadata": OBJECT_META, "spec": None,
                  "status": None},
    "Node": {"apiVersion": None, "kind": None, "metadata": OBJECT_META, "spec": None,
             "status": None},
    "Endpoints": {"apiVersion": None, "kind": None, "metadata": OBJECT_META, "subsets": None},
    "EndpointSlice": {"apiVersion": None, "kind": None, "metadata": OBJECT_META,
                      "addressType": None, "endpoints": None, "ports": None},
}


def prune_unknown_fields(kind, obj):
    """Drops fields the real server's types do not have; returns their paths."""
    schema = SCHEMAS.get(kind)
    unknown = []
    if schema is not None:
        _prune(obj, schema, "", unknown)
    return unknown


def _prune(value, schema, path, unknown):
    if schema is None:
        return
    if isinstance(schema, list):
        if isinstance(value, list):
            for i, item in enumerate(value):
                _prune(item, schema[0], f"{path}[{i}]", unknown)
        return
    if not isinstance(value, dict):
        return
    for key in list(value):
        sub = f"{path}.{key}" if path else key
        if key not in schema:
            unknown.append(sub)
            del value[key]
        else:
            _prune(value[key], schema[key], sub, unknown)


def check_unknown_fields(resource, obj, validation, warnings=None):
    """Server-side field validation (the fieldValidation query parameter; KEP 2885, GA in
    1.27; staging/src/k8s.io/apiserver/pkg/endpoints/handlers/rest.go, fieldValidation):
    Strict answers 400 naming every unknown field, Warn (the default) drops them and says so
    in `Warning` headers, Ignore drops them silently."""
    unknown = prune_unknown_fields(resource.kind, obj)
    if unknown and validation == "Warn" and warnings is not None:
        warnings.extend(f'unknown field "{u}"' for u in unknown)
    if unknown and validation == "Strict":
        listing = ", ".join(f'unknown field "{u}"' for u in unknown)
        raise bad_request(f'{resource.kind} in version "{resource.version}" cannot be handled as '
                          f'a {resource.kind}: strict decoding error: {listing}')


VALIDATORS = {"Service": validate_service, "Lease": validate_lease, "Event": validate_event,
              "ConfigMap": validate_configmap, "Pod": validate_pod,
              "EndpointSlice": validate_endpointslice}


# ----------------------------------------------------------------------------------------------
# The store


class Watcher:
    def __init__(self, resource, namespace, label_match, field_match, queue_size):
        self.resource = resource
        self.namespace = namespace
        self.label_match = label_match
        self.field_match = field_match
        self.events = queue.Queue(maxsize=queue_size)
        self.closed = threading.Event()
        self.dropped = False     # set by the drop fault: end without the terminating chunk
        self.overflowed = False  # queue full: end the stream (cleanly) like the real server

    def selects(self, obj):
        if obj is None:
            return False
        meta = obj.get("metadata", {})
        if self.namespace and meta.get("namespace") != self.namespace:
            return False
        return self.label_match(meta.get("labels")) and self.field_match(obj)

    def offer(self, event):
        if self.closed.is_set():
            return
        try:
            self.events.put_nowait(event)
        except queue.Full:
            self.overflowed = True
            self.closed.set()

    def event_for(self, change_type, old, new):
        """The event this watcher sees for a change, or None (the object is outside the filter)."""
        was, now = self.selects(old), self.selects(new)
        if change_type == "DELETED":
            return ("DELETED", old) if was else None
        if now and not was:
            return ("ADDED", new)
        if now and was:
            return ("MODIFIED", new)
        if was and not now:
            return ("DELETED", new)
        return None


class Store:
    def __init__(self, window, watch_queue_size):
        self.lock = threading.RLock()
        self.objects = {r.key: {} for r in RESOURCES}  # resource key -> (ns, name) -> object
        self.rv = 0
        self.history = collections.deque()  # (rv, resource key, type, old, new), oldest first
        self.window = window
        self.compacted_rv = 0  # every change with rv > compacted_rv is in history
        self.watchers = set()
        self.watch_queue_size = watch_queue_size
        self.allocated_cluster_ips = set()
        self.allocated_node_ports = set()
        self.ip_families = ["IPv4"]  # the cluster's service IP families, primary first
        self.random = random.Random()
        self.audit = []       # every change of a Service's status.loadBalancer.ingress
        self.journal = None   # with --state-dir: every change, appended (see save / load)
        self.audit_file = None

    # -- history --

    def _record(self, resource, change_type, old, new):
        if self.journal is not None:
            self.journal.write(json.dumps({"rv": self.rv, "resource": list(resource.key),
                                           "ref": list(_ref(old if new is None else new)),
                                           "object": new}, separators=(",", ":")) + "\n")
            self.journal.flush()
        if resource.kind == "Service":
            self._audit(change_type, old, new)
        self.history.append((self.rv, resource.key, change_type, old, new))
        while len(self.history) > self.window:
            self.compacted_rv = self.history.popleft()[0]
        for w in list(self.watchers):
            if w.resource.key == resource.key:
                ev = w.event_for(change_type, old, new)
                if ev:
                    w.offer((ev[0], ev[1]))

    # -- audit log: every value a Service's status.loadBalancer.ingress took, with its time --

    def _audit(self, change_type, old, new):
        def addresses(obj):
            ingress = ((obj or {}).get("status") or {}).get("loadBalancer", {}).get("ingress")
            return [e.get("ip") or e.get("hostname") for e in ingress or [] if isinstance(e, dict)]
        before, after = addresses(old), addresses(new)
        if before == after and change_type != "DELETED":
            return
        if change_type == "DELETED" and not before:
            return
        meta = (new or old)["metadata"]
        entry = {"seq": len(self.audit), "time": round(time.time(), 6), "resourceVersion": self.rv,
                 "type": change_type, "namespace": meta.get("namespace"), "name": meta.get("name"),
                 "uid": meta.get("uid"), "ips": after, "previous": before}
        self.audit.append(entry)
        if self.audit_file is not None:
            self.audit_file.write(json.dumps(entry, separators=(",", ":")) + "\n")
            self.audit_file.flush()

    # -- state kept across a restart (--state-dir) --

    def load(self, state_dir):
        """Reads the state a previous run saved (state.json, then journal.ndjson and
        audit.ndjson); returns False when there is none."""
        state_path = os.path.join(state_dir, "state.json")
        journal_path = os.path.join(state_dir, "journal.ndjson")
        if not os.path.exists(state_path) and not os.path.exists(journal_path):
            return False
        if os.path.exists(state_path):
            with open(state_path) as f:
                state = json.load(f)
            self.rv = int(state["resourceVersion"])
            for key, ref, obj in state["objects"]:
                self.objects[tuple(key)][(ref[0], ref[1])] = obj
        if os.path.exists(journal_path):
            with open(journal_path) as f:
                for line in f:
                    try:
                        change = json.loads(line)
                    except ValueError:
                        break  # a line cut by a crash: the end of the journal
                    objects = self.objects[tuple(change["resource"])]
                    ref = (change["ref"][0], change["ref"][1])
                    if change["object"] is None:
                        objects.pop(ref, None)
                    else:
                        objects[ref] = change["object"]
                    self.rv = max(self.rv, int(change["rv"]))
        audit_path = os.path.join(state_dir, "audit.ndjson")
        if os.path.exists(audit_path):
            with open(audit_path) as f:
                for line in f:
                    try:
                        self.audit.append(json.loads(line))
                    except ValueError:
                        break
        # A restarted server keeps no watch history: older resourceVersions are gone (410).
        self.compacted_rv = self.rv
        for svc in self.objects[("", "services")].values():
            spec = svc.get("spec", {})
            for ip in spec.get("clusterIPs") or [spec.get("clusterIP")]:
                if ip and ip != "None":
                    self.allocated_cluster_ips.add(ip)
            for p in spec.get("ports", []) or []:
                if p.get("nodePort"):
                    self.allocated_node_ports.add(p["nodePort"])
        return True

    def open_state(self, state_dir):
        """From now on every change is appended to the journal, every audit entry to its file."""
        self.save(state_dir)
        self.audit_file = open(os.path.join(state_dir, "audit.ndjson"), "w")
        for entry in self.audit:
            self.audit_file.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self.audit_file.flush()

    def save(self, state_dir):
        """Writes every object to state.json and starts an empty journal."""
        with self.lock:
            objects = [[list(key), list(ref), obj] for key, by_ref in self.objects.items()
                       for ref, obj in sorted(by_ref.items(), key=lambda r: (r[0][0] or "", r[0][1]))]
            write_atomically(os.path.join(state_dir, "state.json"),
                             json.dumps({"resourceVersion": self.rv, "objects": objects}), 0o600)
            if self.journal is not None:
                self.journal.close()
            self.journal = open(os.path.join(state_dir, "journal.ndjson"), "w")

    def compact(self):
        with self.lock:
            self.history.clear()
            self.compacted_rv = self.rv

    def next_rv(self):
        self.rv += 1
        return str(self.rv)

    def snapshot(self, resource, rv):
        """The objects of a resource as they were at rv (rv must not be compacted)."""
        state = dict(self.objects[resource.key])
        for erv, key, _, old, new in reversed(self.history):
            if erv <= rv:
                break
            if key != resource.key:
                continue
            ref = _ref(old if old is not None else new)
            if old is None:
                state.pop(ref, None)
            else:
                state[ref] = old
        return state

    # -- watch --

    def add_watcher(self, watcher, start_rv, send_initial):
        """Registers a watcher; returns the events to send first. Raises ApiError 410."""
        with self.lock:
            initial = []
            if send_initial:
                for ref in sorted(self.objects[watcher.resource.key]):
                    obj = self.objects[watcher.resource.key][ref]
                    if watcher.selects(obj):
                        initial.append(("ADDED", obj))
            else:
                if start_rv < self.compacted_rv:
                    raise expired(f"too old resource version: {start_rv} ({self.compacted_rv + 1})")
                for erv, key, change_type, old, new in self.history:
                    if erv > start_rv and key == watcher.resource.key:
                        ev = watcher.event_for(change_type, old, new)
                        if ev:
                            initial.append(ev)
            self.watchers.add(watcher)
            return initial, self.rv

    def remove_watcher(self, watcher):
        with self.lock:
            self.watchers.discard(watcher)

    def drop_watchers(self):
        with self.lock:
            for w in list(self.watchers):
                w.dropped = True
                w.closed.set()
                try:
                    w.events.put_nowait(None)
                except queue.Full:
                    pass

    # -- services: cluster IPs and node ports --

    @staticmethod
    def _cluster_ip_range(network):
        """(first usable address, how many) as the API server's allocator counts them
        (pkg/registry/core/service/ipallocator/bitmap.go, NewAllocatorCIDRRange): never the
        network's first address, and for IPv4 not its broadcast address either."""
        size = network.num_addresses - (2 if network.version == 4 else 1)
        return network.network_address + 1, size

    def _allocate_cluster_ip(self, requested, errors, family="IPv4"):
        if requested == "None":
            return "None"
        if requested:
            ip = ipaddress.ip_address(requested)
            network = CLUSTER_IP_NETWORKS["IPv6" if ip.version == 6 else "IPv4"]
            first, size = self._cluster_ip_range(network)
            if ip not in network or not 0 <= int(ip) - int(first) < size:
                errors.append(FieldError("spec.clusterIPs", "Invalid", [requested],
                                         f"failed to allocate IP {requested}: the provided IP "
                                         f"({requested}) is not in the valid range. The range of "
                                         f"valid IPs is {network}"))
                return None
            if requested in self.allocated_cluster_ips:
                errors.append(FieldError("spec.clusterIPs", "Invalid", [requested],
                                         "failed to allocate IP {requested}: provided IP is "
                                         "already allocated".format(requested=requested)))
                return None
            self.allocated_cluster_ips.add(requested)
            return requested
        # Like the API server's allocator (pkg/registry/core/service/allocator/bitmap.go,
        # randomScanStrategyWithOffset): a random offset, then the next free one after it.
        first, size = self._cluster_ip_range(CLUSTER_IP_NETWORKS[family])
        offset = self.random.randrange(size)
        for _ in range(size):  # the whole range only when it is (nearly) full
            candidate = str(first + offset)
            if candidate not in self.allocated_cluster_ips:
                self.allocated_cluster_ips.add(candidate)
                return candidate
            offset = (offset + 1) % size
        errors.append(FieldError("spec.clusterIPs", "Invalid", [],
                                 "failed to allocate a serviceIP: range is full"))
        return None

    def _allocate_node_port(self, requested, field, errors):
        if requested:
            if requested in self.allocated_node_ports:
                errors.append(FieldError(field, "Invalid", requested,
                                         "provided port is already allocated"))
                return None
            self.allocated_node_ports.add(requested)
            return requested
        for port in range(NODE_PORT_RANGE[0], NODE_PORT_RANGE[1] + 1):
            if port not in self.allocated_node_ports:
                self.allocated_node_ports.add(port)
                return port
        errors.append(FieldError(field, "Invalid", 0, "range is full"))
        return None

    def _release_service(self, svc):
        spec = svc.get("spec", {})
        for ip in spec.get("clusterIPs") or [spec.get("clusterIP")]:
            self.allocated_cluster_ips.discard(ip)
        for p in spec.get("ports", []) or []:
            self.allocated_node_ports.discard(p.get("nodePort"))

    def _default_cluster_ips(self, spec, old_spec, errors):
        """spec.clusterIP(s), ipFamilies and ipFamilyPolicy as the API server sets them, from
        the cluster's families (--ip-families): pkg/registry/core/service/storage/alloc.go
        (initIPFamilyFields, allocClusterIPs) and storage.go (patchAllocatedValues),
        pkg/apis/core/v1/defaults.go (SetDefaults_Service: clusterIPs from clusterIP) and
        pkg/apis/core/validation/validation.go (validateIPFamilyInfo,
        validateServiceClusterIPsRelatedFields). Returns False after adding errors."""
        cluster = self.ip_families
        policies = ("SingleStack", "PreferDualStack", "RequireDualStack")
        if old_spec is not None and old_spec.get("clusterIP"):
            # patchAllocatedValues: an update that omits them keeps the allocated cluster IPs.
            if not spec.get("clusterIP"):
                spec["clusterIP"] = old_spec["clusterIP"]
            if not spec.get("clusterIPs") and old_spec.get("clusterIPs"):
                spec["clusterIPs"] = list(old_spec["clusterIPs"])
            # A client that PUTs back what it read sends these too; one that leaves them out
            # (a merge or strategic patch never does) keeps them, as kubectl users expect.
            if "ipFamilies" not in spec and old_spec.get("ipFamilies"):
                spec["ipFamilies"] = list(old_spec["ipFamilies"])
            if "ipFamilyPolicy" not in spec and old_spec.get("ipFamilyPolicy"):
                spec["ipFamilyPolicy"] = old_spec["ipFamilyPolicy"]
        ips = list(spec.get("clusterIPs") or [])
        if spec.get("clusterIP") and not ips:
            ips = [spec["clusterIP"]]
        if ips and spec.get("clusterIP") and ips[0] != spec["clusterIP"]:
            errors.append(FieldError("spec.clusterIPs[0]", "Invalid", ips[0],
                                     "must match `clusterIP` if specified"))
            return False
        families = list(spec.get("ipFamilies") or [])
        policy = spec.get("ipFamilyPolicy")
        if not isinstance(families, list) or not all(isinstance(f, str) for f in families):
            errors.append(FieldError("spec.ipFamilies", "Invalid", families, "must be a list"))
            return False
        if policy is not None and policy not in policies:
            errors.append(FieldError("spec.ipFamilyPolicy", "Unsupported", policy,
                                     "supported values: " + ", ".join(f'"{p}"' for p in policies)))
        for i, family in enumerate(families):
            if family not in ("IPv4", "IPv6"):
                errors.append(FieldError(f"spec.ipFamilies[{i}]", "Unsupported", family,
                                         'supported values: "IPv4", "IPv6"'))
            elif family in families[:i]:
                errors.append(FieldError(f"spec.ipFamilies[{i}]", "Duplicate", family))
        if len(families) > 2:
            errors.append(FieldError("spec.ipFamilies", "Invalid", families,
                                     "may specify no more than one IP for each IP family"))
        if len(ips) > 2:
            errors.append(FieldError("spec.clusterIPs", "Invalid", ips,
                                     "may specify no more than one IP for each IP family"))
        for i, ip in enumerate(ips):
            if ip == "None" and i == 0 and len(ips) == 1:
                continue
            if ip == "None" or not _is_ip(ip):
                errors.append(FieldError(f"spec.clusterIPs[{i}]", "Invalid", ip,
                                         "must be empty, 'None', or a valid IP address"))
        if errors:
            return False
        # Update only: SingleStack with the same clusterIPs / ipFamilies drops the secondary.
        if old_spec is not None and (policy or "SingleStack") == "SingleStack":
            if ips == (old_spec.get("clusterIPs") or []) and len(ips) > 1:
                ips = ips[:1]
            if families == (old_spec.get("ipFamilies") or []) and len(families) > 1:
                families = families[:1]
        # The families of the given cluster IPs, in order.
        for i, ip in enumerate(ips):
            if ip == "None":
                break
            family = "IPv6" if ":" in ip else "IPv4"
            if i >= len(families):
                if family not in cluster:
                    errors.append(FieldError(f"spec.clusterIPs[{i}]", "Invalid", ips,
                                             f"{family} is not configured on this cluster"))
                    return False
                families.append(family)
            elif families[i] != family:
                errors.append(FieldError(f"spec.clusterIPs[{i}]", "Invalid", ip,
                                         f"expected an {families[i]} value as indicated by "
                                         f"`ipFamilies[{i}]`"))
                return False
        if len(ips) == 2 and families[0] == families[1]:
            errors.append(FieldError("spec.clusterIPs[1]", "Invalid", ips[1],
                                     "may specify no more than one IP for each IP family"))
            return False
        headless = ips[:1] == ["None"]
        if headless and not spec.get("selector"):
            # The headless, selectorless special case: any families, no cluster IP.
            if policy is None:
                policy = "PreferDualStack" if len(cluster) > 1 else "SingleStack"
            if not families:
                families = [cluster[0]]
            if len(families) < 2 and policy != "SingleStack":
                families.append("IPv6" if families[0] == "IPv4" else "IPv4")
            spec.update(clusterIP="None", clusterIPs=["None"], ipFamilies=families,
                        ipFamilyPolicy=policy)
            return True
        if policy == "RequireDualStack" and len(cluster) < 2:
            errors.append(FieldError("spec.ipFamilyPolicy", "Invalid", policy,
                                     "this cluster is not configured for dual-stack services"))
        for i, family in enumerate(families):
            if family not in cluster:
                errors.append(FieldError(f"spec.ipFamilies[{i}]", "Invalid", family,
                                         "not configured on this cluster"))
        if errors:
            return False
        policy = policy or "SingleStack"
        if not families:
            families = [cluster[0]]
        if policy != "SingleStack" and len(families) == 1 and len(cluster) == 2:
            families.append("IPv6" if families[0] == "IPv4" else "IPv4")
        if policy == "SingleStack" and len(families) > 1:
            errors.append(FieldError("spec.ipFamilyPolicy", "Invalid", policy,
                                     "must be 'RequireDualStack' or 'PreferDualStack' when "
                                     "multiple IP families are specified"))
            return False
        if policy == "SingleStack" and len(ips) > 1:
            errors.append(FieldError("spec.ipFamilyPolicy", "Invalid", policy,
                                     "must be 'RequireDualStack' or 'PreferDualStack' when "
                                     "multiple cluster IPs are specified"))
            return False
        old_ips = list((old_spec or {}).get("clusterIPs") or
                       ([old_spec["clusterIP"]] if (old_spec or {}).get("clusterIP") else []))
        if old_ips and ips[:1] != old_ips[:1]:
            errors.append(FieldError("spec.clusterIPs[0]", "Invalid", ips[:1] or "",
                                     "may not change once set"))
            return False
        if headless:
            new_ips = ["None"]
        else:
            new_ips = []
            for i, family in enumerate(families):
                requested = ips[i] if i < len(ips) else ""
                if requested and requested in old_ips:
                    new_ips.append(requested)
                    continue
                ip = self._allocate_cluster_ip(requested, errors, family)
                if ip is None:
                    for taken in new_ips:
                        if taken not in old_ips:
                            self.allocated_cluster_ips.discard(taken)
                    return False
                new_ips.append(ip)
        for ip in old_ips:
            if ip not in new_ips:
                self.allocated_cluster_ips.discard(ip)
        spec.update(clusterIP=new_ips[0], clusterIPs=new_ips, ipFamilies=families,
                    ipFamilyPolicy=policy)
        return True

    def _default_service(self, svc, old, errors):
        """Defaults a Service's spec and allocates its cluster IP and node ports."""
        spec = svc.setdefault("spec", {})
        stype = spec.setdefault("type", "ClusterIP")
        old_spec = (old or {}).get("spec", {})
        for p in spec.get("ports", []) or []:
            p.setdefault("protocol", "TCP")
            p.setdefault("targetPort", p.get("port"))
        if stype == "ExternalName":
            # pkg/apis/core/validation/validation.go (ValidateService): no cluster IPs and no
            # families on an ExternalName Service; pkg/registry/core/service/strategy.go
            # (dropTypeDependentFields): those kept unchanged from before a type change to
            # ExternalName are dropped instead.
            carried = old is not None and old_spec.get("type", "ClusterIP") != "ExternalName"
            forbidden = set()
            for key, field in (("clusterIP", "spec.clusterIPs"), ("clusterIPs", "spec.clusterIPs"),
                               ("ipFamilies", "spec.ipFamilies"),
                               ("ipFamilyPolicy", "spec.ipFamilyPolicy")):
                if spec.get(key) and not (carried and spec[key] == old_spec.get(key)) and \
                        field not in forbidden:
                    forbidden.add(field)
                    errors.append(FieldError(field, "Forbidden",
                                             detail="may not be set for ExternalName services"))
            if errors:
                return
            for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                spec.pop(key, None)
            for ip in old_spec.get("clusterIPs") or [old_spec.get("clusterIP")]:
                self.allocated_cluster_ips.discard(ip)
        else:
            if not self._default_cluster_ips(spec, old_spec if old is not None else None,
                                             errors):
                return
            spec.setdefault("internalTrafficPolicy", "Cluster")
        spec.setdefault("sessionAffinity", "None")
        wants_node_ports = stype == "NodePort" or (
            stype == "LoadBalancer" and spec.setdefault("allocateLoadBalancerNodePorts", True))
        if stype in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
        else:
            spec.pop("externalTrafficPolicy", None)
        old_ports = {(p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
                     for p in old_spec.get("ports", []) or []}
        kept = set()
        for i, p in enumerate(spec.get("ports", []) or []):
            previous = old_ports.get((p.get("port"), p.get("protocol")))
            if wants_node_ports or p.get("nodePort"):
                if not p.get("nodePort") and previous:
                    p["nodePort"] = previous
                if p.get("nodePort") and p["nodePort"] == previous:
                    kept.add(previous)
                    continue
                port = self._allocate_node_port(p.get("nodePort"), f"spec.ports[{i}].nodePort",
                                                errors)
                if port is None:
                    return
                p["nodePort"] = port
                kept.add(port)
            else:
                p.pop("nodePort", None)
        for port in old_ports.values():
            if port and port not in kept:
                self.allocated_node_ports.discard(port)
        if spec.get("sessionAffinity") == "ClientIP":
            spec.setdefault("sessionAffinityConfig", {"clientIP": {"timeoutSeconds": 10800}})
        svc.setdefault("status", {}).setdefault("loadBalancer", {})

    # -- CRUD --

    def _check_namespace(self, resource, namespace):
        if resource.namespaced and (None, namespace) not in self.objects[("", "namespaces")]:
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found',
                           {"name": namespace, "kind": "namespaces"})

    def _validate(self, resource, obj, name, errors=None):
        errors = list(errors or [])
        validate_metadata(resource, obj, errors)
        validator = VALIDATORS.get(resource.kind)
        if validator:
            validator(obj, errors)
        if errors:
            raise invalid(resource, name, errors)

    def create(self, resource, namespace, obj, dry_run=False):
        with self.lock:
            meta = obj.setdefault("metadata", {})
            if resource.namespaced:
                if meta.get("namespace") and meta["namespace"] != namespace:
                    raise bad_request("the namespace of the provided object does not match the "
                                      "namespace sent on the request")
                meta["namespace"] = namespace
                self._check_namespace(resource, namespace)
            else:
                meta.pop("namespace", None)
            if not meta.get("name") and meta.get("generateName"):
                for _ in range(100):
                    name = meta["generateName"] + secrets.token_hex(3)[:5]
                    if (_ref(obj)[0], name) not in self.objects[resource.key]:
                        break
                meta["name"] = name
            name = meta.get("name", "")
            if meta.get("resourceVersion"):
                raise bad_request("resourceVersion should not be set on objects to be created")
            self._validate(resource, obj, name)
            if _ref(obj) in self.objects[resource.key]:
                raise already_exists(resource, name)
            obj["apiVersion"] = resource.api_version
            obj["kind"] = resource.kind
            errors = []
            if resource.kind == "Service":
                obj["status"] = {}  # status is set through the status subresource only
                if dry_run:
                    saved = (set(self.allocated_cluster_ips), set(self.allocated_node_ports))
                self._default_service(obj, None, errors)
                if dry_run:
                    self.allocated_cluster_ips, self.allocated_node_ports = saved
                if errors:
                    raise invalid(resource, name, errors)
            if resource.kind == "Pod":
                default_pod(obj)
            if resource.kind == "Namespace":
                obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
                obj["status"] = {"phase": "Active"}
                meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
            if resource.kind == "Lease":
                obj.setdefault("spec", {})
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields",
                        "selfLink"):
                meta.pop(key, None)
            if resource.generation:
                meta["generation"] = 1
            else:
                meta.pop("generation", None)
            if dry_run:
                return obj
            meta["resourceVersion"] = self.next_rv()
            self.objects[resource.key][_ref(obj)] = obj
            self._record(resource, "ADDED", None, obj)
            return copy.deepcopy(obj)

    def get(self, resource, namespace, name):
        with self.lock:
            obj = self.objects[resource.key].get((namespace if resource.namespaced else None,
                                                  name))
            if obj is None:
                raise not_found(resource, name)
            return copy.deepcopy(obj)

    def list(self, resource, namespace, label_match, field_match, limit, cont, rv, rv_match):
        with self.lock:
            start = ""
            if cont:
                try:
                    token = json.loads(base64.b64decode(cont + "=" * (-len(cont) % 4)))
                    snapshot_rv, start = int(token["rv"]), token["start"]
                except (ValueError, KeyError, TypeError):
                    raise bad_request("continue key is not valid: incorrect encoded start "
                                      "resourceVersion (version meta.k8s.io/v1)")
                if snapshot_rv < self.compacted_rv:
                    raise expired("The provided continue parameter is too old to display a "
                                  "consistent list result. You can start a new list without "
                                  "the continue parameter, or use the continue token in this "
                                  "response to retrieve the remainder of the results. Continuing "
                                  "with the provided token results in an inconsistent list - "
                                  "objects that were created, modified, or deleted between the "
                                  "time the first chunk was returned and now may show up in the "
                                  "list.")
            elif rv and rv != "0" and rv_match == "Exact":
                snapshot_rv = int(rv)
                if snapshot_rv < self.compacted_rv:
                    raise expired(f"too old resource version: {snapshot_rv} "
                                  f"({self.compacted_rv + 1})")
                if snapshot_rv > self.rv:
                    raise ApiError(504, "Timeout", f"Too large resource version: {snapshot_rv}, "
                                   f"current: {self.rv}", {"causes": [
                                       {"reason": "ResourceVersionTooLarge",
                                        "message": "Too large resource version"}],
                                       "retryAfterSeconds": 1})
            else:
                snapshot_rv = self.rv
            state = self.snapshot(resource, snapshot_rv)
            items = []
            for ref in sorted(state, key=lambda r: (r[0] or "", r[1])):
                obj = state[ref]
                key = f"{ref[0] or ''}/{ref[1]}"
                if key <= start:
                    continue
                if namespace and ref[0] != namespace:
                    continue
                if label_match(obj["metadata"].get("labels")) and field_match(obj):
                    items.append((key, obj))
            meta = {"resourceVersion": str(snapshot_rv)}
            if limit and len(items) > limit:
                last_key = items[limit - 1][0]
                remaining = len(items) - limit
                items = items[:limit]
                meta["continue"] = base64.b64encode(json.dumps(
                    {"v": "meta.k8s.io/v1", "rv": snapshot_rv, "start": last_key}).encode()
                ).decode().rstrip("=")
                meta["remainingItemCount"] = remaining
            return [copy.deepcopy(o) for _, o in items], meta

    def update(self, resource, namespace, name, obj, subresource=None, dry_run=False,
               allow_create=True):
        with self.lock:
            ref = (namespace if resource.namespaced else None, name)
            meta = obj.setdefault("metadata", {})
            if meta.get("name") and meta["name"] != name:
                raise bad_request("the name of the object (%s) does not match the name on the URL "
                                  "(%s)" % (meta["name"], name))
            if resource.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            meta["name"] = name
            current = self.objects[resource.key].get(ref)
            if current is None:
                if resource.create_on_update and subresource is None and allow_create:
                    meta.pop("resourceVersion", None)
                    return self.create(resource, namespace, obj, dry_run), True
                raise not_found(resource, name)
            given_rv = meta.get("resourceVersion")
            if given_rv and given_rv != current["metadata"]["resourceVersion"]:
                raise conflict(resource, name)
            if given_rv and meta.get("uid") and meta["uid"] != current["metadata"]["uid"]:
                raise conflict(resource, name)
            new = copy.deepcopy(obj)
            old_meta = current["metadata"]
            if subresource == "status":
                status = new.get("status")
                new = copy.deepcopy(current)
                if status is None:
                    new.pop("status", None)
                else:
                    new["status"] = status
            else:
                if resource.status:
                    if "status" in current:
                        new["status"] = copy.deepcopy(current["status"])
                    else:
                        new.pop("status", None)
                if resource.namespaced:
                    new["metadata"]["namespace"] = namespace
                for key in ("uid", "creationTimestamp", "deletionTimestamp",
                            "deletionGracePeriodSeconds", "generation"):
                    if key in old_meta:
                        new["metadata"][key] = old_meta[key]
                    else:
                        new["metadata"].pop(key, None)
                new["metadata"].pop("managedFields", None)
            new["apiVersion"] = resource.api_version
            new["kind"] = resource.kind
            status_errors = []
            if resource.kind == "Service" and subresource == "status":
                # pkg/registry/core/service/strategy.go: the status is validated on status
                # writes only (ValidateServiceStatusUpdate), after defaulting.
                default_load_balancer_status(new)
                validate_load_balancer_status(new, status_errors)
            self._validate(resource, new, name, status_errors)
            errors = []
            if resource.kind == "Service" and subresource is None:
                saved = (set(self.allocated_cluster_ips), set(self.allocated_node_ports))
                self._default_service(new, current, errors)
                if errors or dry_run:
                    self.allocated_cluster_ips, self.allocated_node_ports = saved
                if errors:
                    raise invalid(resource, name, errors)
            if resource.kind == "Namespace" and subresource is None:
                new["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
            if resource.generation and subresource is None:
                if any(new.get(f) != current.get(f) for f in resource.generation):
                    new["metadata"]["generation"] = old_meta.get("generation", 1) + 1
            new["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
            if new == current:
                return copy.deepcopy(current), False  # no-op: resourceVersion unchanged
            if dry_run:
                return new, False
            if old_meta.get("deletionTimestamp") and not new["metadata"].get("finalizers"):
                return self._remove(resource, ref, current, new), False
            new["metadata"]["resourceVersion"] = self.next_rv()
            self.objects[resource.key][ref] = new
            self._record(resource, "MODIFIED", current, new)
            return copy.deepcopy(new), False

    def patch(self, resource, namespace, name, patch_type, body, subresource=None,
              dry_run=False, validation="Warn", warnings=None):
        with self.lock:
            current = self.get(resource, namespace, name)
            if patch_type == "merge":
                if not isinstance(body, dict):
                    raise bad_request("merge patch must be a JSON object")
                patched = merge_patch(current, body)
            elif patch_type == "json":
                patched = json_patch(current, body)
            elif patch_type == "strategic":
                if not isinstance(body, dict):
                    raise bad_request("strategic merge patch must be a JSON object")
                patched = strategic_merge_patch(current, body, resource.kind)
            else:
                raise AssertionError(patch_type)
            if not isinstance(patched, dict):
                raise bad_request("the patched object is not a JSON object")
            check_unknown_fields(resource, patched, validation, warnings)
            patched.setdefault("metadata", {})
            # A resourceVersion in the patch is a precondition, as on the real server.
            if patched["metadata"].get("resourceVersion") is None:
                patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            if patched["metadata"].get("name", name) != name:
                raise bad_request("metadata.name: Invalid value: the name of the object does "
                                  "not match the name on the URL")
            if patched["metadata"].get("uid") not in (None, current["metadata"]["uid"]):
                raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: "
                               f"{patched['metadata']['uid']}, UID in object meta: "
                               f"{current['metadata']['uid']}", _details(resource, name))
            result, _ = self.update(resource, namespace, name, patched, subresource, dry_run,
                                    allow_create=False)
            return result

    def delete(self, resource, namespace, name, options, dry_run=False):
        with self.lock:
            ref = (namespace if resource.namespaced else None, name)
            current = self.objects[resource.key].get(ref)
            if current is None:
                raise not_found(resource, name)
            pre = (options or {}).get("preconditions") or {}
            if pre.get("resourceVersion") and pre["resourceVersion"] != \
                    current["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f"Precondition failed: ResourceVersion in "
                               f"precondition: {pre['resourceVersion']}, ResourceVersion in "
                               f"object meta: {current['metadata']['resourceVersion']}",
                               _details(resource, name))
            if pre.get("uid") and pre["uid"] != current["metadata"]["uid"]:
                raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: "
                               f"{pre['uid']}, UID in object meta: {current['metadata']['uid']}",
                               _details(resource, name))
            if dry_run:
                return copy.deepcopy(current)
            grace = pod_grace_period(current, options) if resource.kind == "Pod" else 0
            if grace > 0:
                # pkg/registry/core/pod/strategy.go, CheckGracefulDelete: a pod bound to a node
                # and not finished is only marked; its kubelet deletes it (with
                # gracePeriodSeconds=0) once its containers stopped. kubesim runs no kubelet:
                # `kubectl delete --grace-period=0 --force` (or the test) removes it.
                if current["metadata"].get("deletionTimestamp"):
                    return copy.deepcopy(current)
                new = copy.deepcopy(current)
                new["metadata"]["deletionTimestamp"] = (
                    datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
                        seconds=grace)).strftime("%Y-%m-%dT%H:%M:%SZ")
                new["metadata"]["deletionGracePeriodSeconds"] = grace
                new["metadata"]["resourceVersion"] = self.next_rv()
                self.objects[resource.key][ref] = new
                self._record(resource, "MODIFIED", current, new)
                return copy.deepcopy(new)
            if current["metadata"].get("finalizers") and resource.kind != "Namespace":
                if current["metadata"].get("deletionTimestamp"):
                    return copy.deepcopy(current)
                new = copy.deepcopy(current)
                new["metadata"]["deletionTimestamp"] = now_rfc3339()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                new["metadata"]["resourceVersion"] = self.next_rv()
                self.objects[resource.key][ref] = new
                self._record(resource, "MODIFIED", current, new)
                return copy.deepcopy(new)
            if resource.kind == "Namespace":
                if name in ("default", "kube-system", "kube-public"):
                    raise ApiError(403, "Forbidden", f'namespaces "{name}" is forbidden: this '
                                   "namespace may not be deleted", _details(resource, name))
                for r in RESOURCES:
                    if r.namespaced:
                        for child_ref in sorted(self.objects[r.key]):
                            if child_ref[0] == name:
                                child = self.objects[r.key][child_ref]
                                self._remove(r, child_ref, child, child)
            return self._remove(resource, ref, current, current)

    def _remove(self, resource, ref, current, final):
        final = copy.deepcopy(final)
        final["metadata"]["resourceVersion"] = self.next_rv()
        del self.objects[resource.key][ref]
        if resource.kind == "Service":
            self._release_service(current)
        self._record(resource, "DELETED", final, None)
        return copy.deepcopy(final)

    def stats(self):
        with self.lock:
            return {"resourceVersion": str(self.rv), "compactedResourceVersion":
                    str(self.compacted_rv), "history": len(self.history),
                    "objects": {"/".join(k).strip("/"): len(v) for k, v in self.objects.items()}}


def _ref(obj):
    meta = obj.get("metadata", {})
    return (meta.get("namespace"), meta.get("name"))


# ----------------------------------------------------------------------------------------------
# Faults and statistics


class Faults:
    """Injected failures. Counted ones ("the next N requests that match") and rate ones ("X %
    of the requests that match, for T seconds"). Requests with the header X-Sim-Exempt: 1 (the
    test's own) are never failed nor delayed."""

    RATE_STATUSES = (429, 500, 503)

    def __init__(self):
        self.lock = threading.Lock()
        self.random = random.Random()
        self.reset()

    def reset(self):
        self.errors_500 = 0
        self.throttle_429 = 0
        self.retry_after = 1
        self.delay_ms = 0
        self.match_method = None
        self.match_path = None
        self.rates = []  # {percent, status, retry_after, method, path_contains, until}

    @staticmethod
    def parse_rate(rate):
        if not isinstance(rate, dict):
            raise bad_request("faults: rate: expected an object {percent, seconds, status, ...}")
        unknown = set(rate) - {"percent", "seconds", "status", "retry_after", "method",
                               "path_contains"}
        if unknown:
            raise bad_request(f"faults: rate: unknown field(s) {sorted(unknown)}")
        try:
            percent = float(rate.get("percent", 0))
            seconds = float(rate.get("seconds", 0))
            status = int(rate.get("status", 500))
            retry_after = rate.get("retry_after")
            retry_after = None if retry_after is None else int(retry_after)
        except (TypeError, ValueError):
            raise bad_request("faults: rate: percent and seconds must be numbers, status and "
                              "retry_after integers")
        if not 0 < percent <= 100 or not 0 < seconds <= 3600:
            raise bad_request("faults: rate: percent must be in (0, 100], seconds in (0, 3600]")
        if status not in Faults.RATE_STATUSES:
            raise bad_request(f"faults: rate: status must be one of {list(Faults.RATE_STATUSES)}")
        return {"percent": percent, "status": status, "retry_after": retry_after,
                "method": rate.get("method") or None, "path_contains": rate.get("path_contains") or None,
                "seconds": seconds, "until": time.monotonic() + seconds}

    def update(self, body):
        rates = body.get("rate")
        if rates is not None:
            rates = [self.parse_rate(r) for r in (rates if isinstance(rates, list) else [rates])]
        with self.lock:
            if "errors_500" in body:
                self.errors_500 = int(body["errors_500"])
            if "throttle_429" in body:
                self.throttle_429 = int(body["throttle_429"])
            if "retry_after" in body:
                self.retry_after = int(body["retry_after"])
            if "delay_ms" in body:
                self.delay_ms = int(body["delay_ms"])
            if "method" in body:
                self.match_method = body["method"] or None
            if "path_contains" in body:
                self.match_path = body["path_contains"] or None
            if rates:
                self.rates.extend(rates)
            if "seed" in body:
                self.random.seed(body["seed"])

    @staticmethod
    def error_for(status, retry_after):
        if status == 500:
            return ApiError(500, "InternalError", "Internal error occurred: injected by kubesim",
                            {"causes": [{"message": "injected by kubesim"}]})
        reason = "TooManyRequests" if status == 429 else "ServiceUnavailable"
        message = "Too many requests, please try again later." if status == 429 else \
            "the server is currently unable to handle the request"
        if retry_after is None:
            return ApiError(status, reason, message, {})
        return ApiError(status, reason, message, {"retryAfterSeconds": retry_after},
                        {"Retry-After": str(retry_after)})

    def take(self, method, path):
        """The injected failure for this request (an ApiError) or None, and the delay in s."""
        with self.lock:
            delay = self.delay_ms / 1000.0
            applies = (self.match_method is None or self.match_method == method) and \
                (self.match_path is None or self.match_path in path)
            if applies and self.errors_500 > 0:
                self.errors_500 -= 1
                return self.error_for(500, None), delay
            if applies and self.throttle_429 > 0:
                self.throttle_429 -= 1
                return self.error_for(429, self.retry_after), delay
            now = time.monotonic()
            self.rates = [r for r in self.rates if r["until"] > now]
            for rate in self.rates:
                if (rate["method"] is None or rate["method"] == method) and \
                        (rate["path_contains"] is None or rate["path_contains"] in path) and \
                        self.random.random() * 100 < rate["percent"]:
                    return self.error_for(rate["status"], rate["retry_after"]), delay
            return None, delay

    def describe(self):
        with self.lock:
            now = time.monotonic()
            rates = [{"percent": r["percent"], "status": r["status"], "retry_after": r["retry_after"],
                      "method": r["method"], "path_contains": r["path_contains"],
                      "remaining_seconds": round(r["until"] - now, 3)}
                     for r in self.rates if r["until"] > now]
            return {"errors_500": self.errors_500, "throttle_429": self.throttle_429,
                    "retry_after": self.retry_after, "delay_ms": self.delay_ms,
                    "method": self.match_method, "path_contains": self.match_path,
                    "rates": rates}


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.by_method = collections.Counter()  # "PATCH services/status"
        self.by_verb = collections.Counter()    # "patch services/status"
        self.watches_open = 0
        self.watches_total = 0
        self.faults_injected = collections.Counter()

    def count(self, method, verb, resource_label):
        with self.lock:
            self.by_method[f"{method} {resource_label}"] += 1
            self.by_verb[f"{verb} {resource_label}"] += 1

    def watch_delta(self, n):
        with self.lock:
            self.watches_open += n
            if n > 0:
                self.watches_total += 1

    def snapshot(self):
        with self.lock:
            return {"requests": dict(self.by_method), "verbs": dict(self.by_verb),
                    "watches_open": self.watches_open, "watches_total": self.watches_total,
                    "faults_injected": dict(self.faults_injected)}


# ----------------------------------------------------------------------------------------------
# HTTP


def discovery_resources(group, version):
    out = []
    for r in GROUP_VERSIONS[(group, version)]:
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update",
                 "watch"]
        entry = {"name": r.plural, "singularName": r.kind.lower(), "namespaced": r.namespaced,
                 "kind": r.kind, "verbs": verbs, "storageVersionHash": base64.b64encode(
                     r.plural.encode()).decode()[:11]}
        if r.short_names:
            entry["shortNames"] = r.short_names
        if r.categories:
            entry["categories"] = r.categories
        out.append(entry)
        if r.status:
            out.append({"name": f"{r.plural}/status", "singularName": "", "namespaced":
                        r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion":
            f"{group}/{version}" if group else version, "resources": out}


def openapi_v3_root():
    paths = {}
    for group, version in GROUP_VERSIONS:
        gv = f"apis/{group}/{version}" if group else f"api/{version}"
        paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash=kubesim"}
    return {"paths": paths}


def openapi_v3_group_version(group, version):
    """Just enough OpenAPI v3 for kubectl to see that the server validates fields itself
    (the fieldValidation parameter on PATCH); no schemas, so kubectl uses its built-in types."""
    paths = {}
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    for r in GROUP_VERSIONS[(group, version)]:
        gvk = {"group": group, "version": version, "kind": r.kind}
        item = f"{prefix}/namespaces/{{namespace}}/{r.plural}/{{name}}" if r.namespaced else \
            f"{prefix}/{r.plural}/{{name}}"
        params = [{"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
                  for n in ("dryRun", "fieldManager", "fieldValidation")]
        paths[item] = {"patch": {"x-kubernetes-action": "patch",
                                 "x-kubernetes-group-version-kind": gvk, "parameters": params,
                                 "responses": {"200": {"description": "OK"}}},
                       "put": {"x-kubernetes-action": "put",
                               "x-kubernetes-group-version-kind": gvk, "parameters": params,
                               "responses": {"200": {"description": "OK"}}}}
        collection = item.rsplit("/", 1)[0]
        paths[collection] = {"post": {"x-kubernetes-action": "post",
                                      "x-kubernetes-group-version-kind": gvk,
                                      "parameters": params,
                                      "responses": {"201": {"description": "Created"}}}}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version":
                                         SERVER_VERSION["gitVersion"]}, "paths": paths,
            "components": {"schemas": {}}}


# ----------------------------------------------------------------------------------------------
# OpenAPI v2 (/openapi/v2): kubectl validates a `kind: List` file on the client against these
# definitions (k8s.io/kubectl/pkg/validation: a List's GVK has no endpoint declaring the
# fieldValidation parameter, so kubectl falls back to the v2 schema and validates each item;
# a kind it finds no definition for is skipped). The definitions are made from SCHEMAS, the
# fields the simulator itself knows, so client and server agree; named as the real server
# names them so kubectl's messages read the same ("unknown field "x" in
# io.k8s.api.core.v1.ServiceSpec"). No paths: kubectl then computes apply's strategic merge
# patches from its built-in types, the same patches the real server's paths would give.

OPENAPI_NAMES = {
    "Service": "io.k8s.api.core.v1.Service",
    "Service.spec": "io.k8s.api.core.v1.ServiceSpec",
    "Service.spec.ports": "io.k8s.api.core.v1.ServicePort",
    "Service.status": "io.k8s.api.core.v1.ServiceStatus",
    "Service.status.loadBalancer": "io.k8s.api.core.v1.LoadBalancerStatus",
    "Service.status.loadBalancer.ingress": "io.k8s.api.core.v1.LoadBalancerIngress",
    "Lease": "io.k8s.api.coordination.v1.Lease",
    "Lease.spec": "io.k8s.api.coordination.v1.LeaseSpec",
    "ConfigMap": "io.k8s.api.core.v1.ConfigMap",
    "Pod": "io.k8s.api.core.v1.Pod",
    "Namespace": "io.k8s.api.core.v1.Namespace",
    "Node": "io.k8s.api.core.v1.Node",
    "Endpoints": "io.k8s.api.core.v1.Endpoints",
    "EndpointSlice": "io.k8s.api.discovery.v1.EndpointSlice",
    "metadata": "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
}
OPENAPI_REQUIRED = {"io.k8s.api.core.v1.ServicePort": ["port"]}


def openapi_v2_document():
    """Swagger 2.0, as a dict, with a definition for each kind in SCHEMAS."""
    definitions = {}

    def schema_for(value, path):
        if value is None:
            return {}  # any value (an arbitrary schema to kubectl)
        if isinstance(value, list):
            return {"type": "array", "items": schema_for(value[0], path)}
        name = OPENAPI_NAMES.get(path.rsplit(".", 1)[-1] if path.endswith(".metadata") else
                                 path) or OPENAPI_NAMES.get(path)
        body = {"type": "object", "properties": {
            key: schema_for(sub, f"{path}.{key}") for key, sub in value.items()}}
        if name is None:
            return body
        if name not in definitions:
            if name in OPENAPI_REQUIRED:
                body["required"] = OPENAPI_REQUIRED[name]
            definitions[name] = body
        return {"$ref": f"#/definitions/{name}"}

    for kind, schema in SCHEMAS.items():
        schema_for(schema, kind)
        resource = next(r for r in RESOURCES if r.kind == kind)
        definitions[OPENAPI_NAMES[kind]]["x-kubernetes-group-version-kind"] = [
            {"group": resource.group, "kind": kind, "version": resource.version}]
    return {"swagger": "2.0", "info": {"title": "Kubernetes",
                                       "version": SERVER_VERSION["gitVersion"]},
            "paths": {}, "definitions": definitions}


def _pb_varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb_field(number, payload):
    """A length-delimited field (wire type 2): strings and embedded messages."""
    if isinstance(payload, str):
        payload = payload.encode()
    return _pb_varint(number << 3 | 2) + _pb_varint(len(payload)) + payload


def _pb_schema(schema):
    """gnostic openapi_v2.Schema (github.com/google/gnostic-models openapiv2/OpenAPIv2.proto):
    _ref 1, required 19, type 22 (TypeItem: value 1), items 23 (ItemsItem: schema 1),
    properties 25 (Properties: additional_properties 1 of NamedSchema: name 1, value 2),
    vendor_extension 31 (NamedAny: name 1, value 2 = Any: yaml 2)."""
    out = b""
    if "$ref" in schema:
        out += _pb_field(1, schema["$ref"])
    for name in schema.get("required", []):
        out += _pb_field(19, name)
    if "type" in schema:
        out += _pb_field(22, _pb_field(1, schema["type"]))
    if "items" in schema:
        out += _pb_field(23, _pb_field(1, _pb_schema(schema["items"])))
    if "properties" in schema:
        out += _pb_field(25, b"".join(
            _pb_field(1, _pb_field(1, key) + _pb_field(2, _pb_schema(sub)))
            for key, sub in schema["properties"].items()))
    for key, value in schema.items():
        if key.startswith("x-"):
            out += _pb_field(31, _pb_field(1, key) + _pb_field(2, _pb_field(2, json.dumps(value))))
    return out


def openapi_v2_protobuf(document):
    """gnostic openapi_v2.Document: swagger 1, info 2 (title 1, version 2), paths 8,
    definitions 9 (additional_properties 1 of NamedSchema). kubectl asks for this encoding
    (client-go discovery OpenAPISchema: Accept application/com.github.proto-openapi.spec.v2
    @v1.0+protobuf) and accepts no other."""
    info = document["info"]
    return (_pb_field(1, document["swagger"]) +
            _pb_field(2, _pb_field(1, info["title"]) + _pb_field(2, info["version"])) +
            _pb_field(8, b"") +
            _pb_field(9, b"".join(_pb_field(1, _pb_field(1, name) + _pb_field(2, _pb_schema(s)))
                                  for name, s in document["definitions"].items())))


OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


def api_groups():
    groups = collections.OrderedDict()
    for group, version in GROUP_VERSIONS:
        if group:
            groups.setdefault(group, []).append(version)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
         "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}}
        for g, vs in groups.items()]}


class Simulator:
    def __init__(self, token, window, bookmark_interval, watch_queue_size, state_dir=None):
        self.token = token
        self.store = Store(window, watch_queue_size)
        self.faults = Faults()
        self.stats = Stats()
        self.bookmark_interval = bookmark_interval
        self.stopping = threading.Event()
        self.state_dir = state_dir
        self.restored = bool(state_dir) and self.store.load(state_dir)
        if not self.restored:
            for ns in INITIAL_NAMESPACES:
                self.store.create(find_resource("", "v1", "namespaces"), None,
                                  {"metadata": {"name": ns}})
        if state_dir:
            self.store.open_state(state_dir)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kubesim"
    sim = None  # set on the subclass made per server

    def log_message(self, fmt, *args):
        if os.environ.get("KUBESIM_LOG"):
            sys.stderr.write("kubesim: %s %s\n" % (self.address_string(), fmt % args))

    # -- plumbing --

    def send_json(self, code, body, content_type="application/json", headers=None):
        data = json.dumps(body, separators=(",", ":")).encode() + b"\n"
        self.send_bytes(code, data, content_type, headers)

    def send_bytes(self, code, data, content_type, headers=None):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        # RFC 7234 warn-code 299, as the API server sends warnings (apiserver/pkg/warning).
        for text in getattr(self, "warnings", None) or []:
            self.send_header("Warning", "299 - " + json.dumps(text))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_error_status(self, error):
        self.send_json(error.code, error.status(), headers=error.headers)

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = self._read_chunked()
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            if self.headers.get("Content-Type", "").startswith("application/yaml"):
                raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an "
                               "unknown format - accepted media types include: application/json")
            raise bad_request("the object provided is unrecognized or the body is not valid "
                              "JSON")

    def _read_chunked(self):
        out = b""
        while True:
            size = int(self.rfile.readline().strip().split(b";")[0], 16)
            if size == 0:
                self.rfile.readline()
                return out
            out += self.rfile.read(size)
            self.rfile.readline()

    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_PATCH(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    def do_HEAD(self):
        self.dispatch()

    def dispatch(self):
        sim = self.sim
        url = urllib.parse.urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True)
                 .items()}
        self.warnings = []
        try:
            auth = self.headers.get("Authorization", "")
            if not secrets.compare_digest(auth.encode(), f"Bearer {sim.token}".encode()):
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if path.startswith("/_sim"):
                return self.handle_sim(path)
            if path in ("/healthz", "/livez", "/readyz"):
                return self._send_text(200, "ok")
            failure, delay = (None, 0) if self.headers.get("X-Sim-Exempt") == "1" else \
                sim.faults.take(self.command, path)
            if delay:
                time.sleep(delay)
            if failure:
                with sim.stats.lock:
                    sim.stats.faults_injected[failure.reason] += 1
                self.read_body_quietly()
                raise failure
            self.route(path, query)
        except ApiError as e:
            self.send_error_status(e)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True
        except Exception as e:  # a bug in the simulator: answer like the real server would
            import traceback
            traceback.print_exc(file=sys.stderr)
            try:
                self.send_error_status(ApiError(500, "InternalError",
                                                f"Internal error occurred: {e}"))
            except OSError:
                self.close_connection = True

    def read_body_quietly(self):
        try:
            if self.command in ("POST", "PUT", "PATCH", "DELETE"):
                self.read_body()
        except ApiError:
            pass

    def _send_text(self, code, text):
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    # -- /_sim --

    def handle_sim(self, path):
        sim = self.sim
        if path == "/_sim/stats" and self.command == "GET":
            body = sim.stats.snapshot()
            body["store"] = sim.store.stats()
            body["faults"] = sim.faults.describe()
            return self.send_json(200, body)
        if path == "/_sim/faults" and self.command == "POST":
            body = self.read_body() or {}
            if not isinstance(body, dict):
                raise bad_request("faults: expected a JSON object")
            sim.faults.update(body)
            if body.get("restart"):
                sim.store.drop_watchers()
                sim.store.compact()
            else:
                # Compacted first: a client that reconnects at once after the drop finds the
                # history gone, as it would once a server has compacted and then closed.
                if body.get("compact"):
                    sim.store.compact()
                if body.get("drop_watches"):
                    sim.store.drop_watchers()
            return self.send_json(200, sim.faults.describe())
        if path == "/_sim/audit" and self.command == "GET":
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            try:
                since = int(query.get("since", ["0"])[-1])
            except ValueError:
                raise bad_request("audit: since must be an integer")
            with sim.store.lock:
                items = list(sim.store.audit[max(0, since):])
                count = len(sim.store.audit)
            return self.send_json(200, {"items": items, "next": count})
        if path == "/_sim/reset" and self.command == "POST":
            self.read_body()
            sim.faults.reset()
            return self.send_json(200, sim.faults.describe())
        raise ApiError(404, "NotFound", "the server could not find the requested resource", {})

    # -- API --

    def route(self, path, query):
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")] if path != "/" \
            else []
        if self.command in ("GET", "HEAD"):
            if path == "/version":
                return self.send_json(200, SERVER_VERSION)
            if path == "/api":
                return self.send_json(200, {"kind": "APIVersions", "versions": ["v1"],
                                            "serverAddressByClientCIDRs": [
                                                {"clientCIDR": "0.0.0.0/0",
                                                 "serverAddress": self.server.address}]})
            if path == "/apis":
                return self.send_json(200, api_groups())
            if path == "/api/v1":
                return self.send_json(200, discovery_resources("", "v1"))
            if path == "/openapi/v2":
                document = openapi_v2_document()
                if "protobuf" in self.headers.get("Accept", ""):
                    return self.send_bytes(200, openapi_v2_protobuf(document),
                                           OPENAPI_V2_PROTOBUF)
                return self.send_json(200, document)
            if path == "/openapi/v3":
                return self.send_json(200, openapi_v3_root())
            if parts[:2] == ["openapi", "v3"]:
                gv = parts[2:]
                key = ("", gv[1]) if gv[:1] == ["api"] and len(gv) == 2 else \
                    (gv[1], gv[2]) if gv[:1] == ["apis"] and len(gv) == 3 else None
                if key in GROUP_VERSIONS:
                    return self.send_json(200, openapi_v3_group_version(*key))
            if len(parts) == 2 and parts[0] == "apis":
                for group, version in GROUP_VERSIONS:
                    if group == parts[1]:
                        g = api_groups()["groups"]
                        found = next(x for x in g if x["name"] == group)
                        return self.send_json(200, dict(found, kind="APIGroup", apiVersion="v1"))
            if len(parts) == 3 and parts[0] == "apis" and (parts[1], parts[2]) in GROUP_VERSIONS:
                return self.send_json(200, discovery_resources(parts[1], parts[2]))
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource",
                           {})
        if (group, version) not in GROUP_VERSIONS:
            raise ApiError(404, "NotFound", "the server could not find the requested resource",
                           {})
        legacy_watch = False
        if rest and rest[0] == "watch":
            legacy_watch, rest = True, rest[1:]
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and find_resource(group, version, rest[2]) \
                and find_resource(group, version, rest[2]).namespaced:
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource",
                           {})
        resource = find_resource(group, version, rest[0])
        if resource is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource",
                           {})
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        if subresource is not None and (subresource != "status" or not resource.status):
            raise ApiError(404, "NotFound", "the server could not find the requested resource",
                           {})
        if resource.namespaced and name is not None and namespace is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource",
                           {})
        if not resource.namespaced and namespace is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource",
                           {})
        dry_run = query.get("dryRun") == "All"
        self.field_validation = query.get("fieldValidation") or "Warn"
        if self.field_validation not in ("Ignore", "Warn", "Strict"):
            raise bad_request(f"invalid fieldValidation directive: {self.field_validation}")
        if "dryRun" in query and query["dryRun"] not in ("All", ""):
            raise bad_request(f'dryRun: Unsupported value: "{query["dryRun"]}": supported '
                              'values: "All"')
        label = resource.group_resource() + (f"/{subresource}" if subresource else "")
        method = self.command
        watch = legacy_watch or query.get("watch") in ("1", "true", "True")
        if method in ("GET", "HEAD"):
            if watch:
                self.sim.stats.count(method, "watch", label)
                field = query.get("fieldSelector", "")
                if name is not None:
                    field = ",".join(x for x in (field, f"metadata.name={name}") if x)
                return self.serve_watch(resource, namespace, query, field)
            if name is None:
                self.sim.stats.count(method, "list", label)
                return self.serve_list(resource, namespace, query)
            self.sim.stats.count(method, "get", label)
            obj = self.sim.store.get(resource, namespace, name)
            if subresource is None and self.wants_table():
                return self.send_json(200, table_for(resource, [obj], obj["metadata"][
                    "resourceVersion"], query.get("includeObject", "Metadata")),
                    TABLE_CONTENT_TYPE)
            return self.send_json(200, obj)
        if method == "POST" and name is None:
            self.sim.stats.count(method, "create", label)
            body = self.read_object(resource)
            obj = self.sim.store.create(resource, namespace, body, dry_run)
            return self.send_json(201, obj)
        if method == "PUT" and name is not None:
            self.sim.stats.count(method, "update", label)
            body = self.read_object(resource)
            obj, created = self.sim.store.update(resource, namespace, name, body, subresource,
                                                 dry_run)
            return self.send_json(201 if created else 200, obj)
        if method == "PATCH" and name is not None:
            self.sim.stats.count(method, "patch", label)
            content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
            kinds = {"application/merge-patch+json": "merge",
                     "application/json-patch+json": "json",
                     "application/strategic-merge-patch+json": "strategic"}
            if content_type not in kinds:
                self.read_body_quietly()
                raise ApiError(415, "UnsupportedMediaType", f'the body of the request was in an '
                               f'unknown format - accepted media types include: '
                               f'application/json-patch+json, application/merge-patch+json, '
                               f'application/strategic-merge-patch+json', None)
            body = self.read_body()
            if body is None:
                raise bad_request("the body of the request was empty")
            obj = self.sim.store.patch(resource, namespace, name, kinds[content_type], body,
                                       subresource, dry_run, self.field_validation,
                                       self.warnings)
            return self.send_json(200, obj)
        if method == "DELETE" and name is not None and subresource is None:
            self.sim.stats.count(method, "delete", label)
            options = self.read_body() or {}
            if query.get("gracePeriodSeconds", "").lstrip("-").isdigit():
                options.setdefault("gracePeriodSeconds", int(query["gracePeriodSeconds"]))
            obj = self.sim.store.delete(resource, namespace, name, options, dry_run)
            return self.send_json(200, obj)
        if method == "DELETE" and name is None:
            self.sim.stats.count(method, "deletecollection", label)
            options = self.read_body() or {}
            label_match = parse_label_selector(query.get("labelSelector", ""))
            field_match = parse_field_selector(resource, query.get("fieldSelector", ""))
            items, meta = self.sim.store.list(resource, namespace, label_match, field_match, 0,
                                              None, None, None)
            for item in items:
                try:
                    self.sim.store.delete(resource, item["metadata"].get("namespace"),
                                          item["metadata"]["name"], options, dry_run)
                except ApiError:
                    pass
            return self.send_json(200, {"kind": f"{resource.kind}List", "apiVersion":
                                        resource.api_version, "metadata": meta, "items": items})
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the "
                       f"requested resource", {})

    def wants_table(self):
        return "as=Table" in self.headers.get("Accept", "").replace(" ", "")

    def read_object(self, resource):
        body = self.read_body()
        if not isinstance(body, dict):
            raise bad_request("the body of the request was empty or not a JSON object")
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if api_version and api_version != resource.api_version:
            raise bad_request(f"the API version in the data ({api_version}) does not match the "
                              f"expected API version ({resource.api_version})")
        if kind and kind != resource.kind:
            raise bad_request(f"the kind in the data ({kind}) does not match the expected kind "
                              f"({resource.kind})")
        if not isinstance(body.get("metadata", {}), dict):
            raise bad_request("metadata must be an object")
        check_unknown_fields(resource, body, self.field_validation, self.warnings)
        return body

    def serve_list(self, resource, namespace, query):
        label_match = parse_label_selector(query.get("labelSelector", ""))
        field_match = parse_field_selector(resource, query.get("fieldSelector", ""))
        try:
            limit = int(query.get("limit") or 0)
        except ValueError:
            raise bad_request(f"limit: Invalid value: {query.get('limit')}")
        cont = query.get("continue") or None
        rv = query.get("resourceVersion") or None
        if cont and rv and rv != "0":
            raise bad_request("specifying resource version is not allowed when using continue")
        rv_match = query.get("resourceVersionMatch") or None
        if rv_match and not rv:
            raise bad_request("resourceVersionMatch is forbidden unless resourceVersion is "
                              "provided")
        if rv and rv != "0" and not rv.isdigit():
            raise bad_request(f'resourceVersion: Invalid value: "{rv}": must be a number')
        items, meta = self.sim.store.list(resource, namespace, label_match, field_match, limit,
                                          cont, rv, rv_match)
        if self.wants_table():
            table = table_for(resource, items, meta["resourceVersion"],
                              query.get("includeObject", "Metadata"))
            table["metadata"] = meta
            return self.send_json(200, table, TABLE_CONTENT_TYPE)
        for item in items:  # as the real server does, list items carry no kind/apiVersion
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return self.send_json(200, {"kind": f"{resource.kind}List",
                                    "apiVersion": resource.api_version, "metadata": meta,
                                    "items": items})

    # -- watch --

    def serve_watch(self, resource, namespace, query, field):
        sim = self.sim
        label_match = parse_label_selector(query.get("labelSelector", ""))
        field_match = parse_field_selector(resource, field)
        rv = query.get("resourceVersion") or ""
        if rv and rv != "0" and not rv.isdigit():
            raise bad_request(f'resourceVersion: Invalid value: "{rv}": must be a number')
        bookmarks = query.get("allowWatchBookmarks") in ("1", "true", "True")
        send_initial_events = query.get("sendInitialEvents") in ("1", "true", "True")
        if send_initial_events and (not bookmarks or
                                    query.get("resourceVersionMatch") != "NotOlderThan"):
            raise invalid(resource, "", [FieldError(
                "resourceVersionMatch", "Forbidden", detail="sendInitialEvents requires setting "
                "resourceVersionMatch to NotOlderThan and allowWatchBookmarks to true")])
        try:
            timeout = float(query.get("timeoutSeconds") or 1800)
        except ValueError:
            raise bad_request("timeoutSeconds must be a number")
        watcher = Watcher(resource, namespace, label_match, field_match, sim.store.watch_queue_size)
        self.watch_table = self.wants_table()
        self.watch_resource = resource
        self.watch_include_object = query.get("includeObject", "Metadata")
        send_all = rv in ("", "0") or send_initial_events
        expired_error = None
        try:
            initial, start_rv = sim.store.add_watcher(watcher, int(rv or 0), send_all)
        except ApiError as e:
            # The real server answers 200 and sends the 410 as an ERROR event.
            initial, start_rv, expired_error = [], 0, e

        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.flush()
        sim.stats.watch_delta(+1)
        clean_end = True
        try:
            if expired_error:
                self.write_event({"type": "ERROR", "object": expired_error.status()})
                return
            for event_type, obj in initial:
                self.write_event({"type": event_type, "object": self.as_watched(obj)})
            if send_initial_events:
                self.write_event(self.bookmark(resource, start_rv, initial_events_end=True))
            deadline = time.monotonic() + timeout
            next_bookmark = time.monotonic() + sim.bookmark_interval
            while True:
                now = time.monotonic()
                if now >= deadline or sim.stopping.is_set():
                    if bookmarks:
                        self.write_bookmark_if_idle(watcher)
                    break
                try:
                    event = watcher.events.get(timeout=max(0.01, min(deadline, next_bookmark,
                                                                     now + 0.5) - now))
                except queue.Empty:
                    event = ()
                    if self.client_hung_up():
                        break
                if event is None or watcher.dropped:
                    clean_end = False
                    break
                if watcher.overflowed:
                    break
                if event:
                    self.write_event({"type": event[0], "object": self.as_watched(event[1])})
                if bookmarks and time.monotonic() >= next_bookmark:
                    self.write_bookmark_if_idle(watcher)
                    next_bookmark = time.monotonic() + sim.bookmark_interval
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            clean_end = False
        finally:
            sim.store.remove_watcher(watcher)
            sim.stats.watch_delta(-1)
            self.close_connection = True
            if clean_end:
                try:
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except OSError:
                    pass
            else:
                self.abort_connection()

    def client_hung_up(self):
        """True when the watching client has closed its end (nothing else is sent on a watch
        connection), so an idle watch does not outlive its client."""
        poller = select.poll()
        poller.register(self.connection.fileno(),
                        select.POLLRDHUP | select.POLLHUP | select.POLLERR)
        return bool(poller.poll(0))

    def as_watched(self, obj):
        if self.watch_table:
            return table_for(self.watch_resource, [obj], obj["metadata"]["resourceVersion"],
                             self.watch_include_object)
        return obj

    def abort_connection(self):
        """Closes the TCP connection without ending the chunked body (a dropped stream)."""
        try:
            sock = self.connection
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def bookmark(self, resource, rv, initial_events_end=False):
        meta = {"resourceVersion": str(rv)}
        if initial_events_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"type": "BOOKMARK", "object": {"kind": resource.kind, "apiVersion":
                                               resource.api_version, "metadata": meta}}

    def write_bookmark_if_idle(self, watcher):
        # A bookmark promises that every change up to its resourceVersion was sent: only send
        # one when nothing is waiting in the queue.
        with self.sim.store.lock:
            if not watcher.events.empty():
                return
            rv = self.sim.store.rv
        self.write_event(self.bookmark(watcher.resource, rv))

    def write_event(self, event):
        data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, handler, context):
        super().__init__(address, handler)
        self.context = context
        self.address = f"{address[0]}:{self.server_address[1]}"

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms Nagle stalls
        # The TLS handshake happens on the request's own thread, at its first read.
        return self.context.wrap_socket(sock, server_side=True,
                                        do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ssl.SSLError, ConnectionError, TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)


# ----------------------------------------------------------------------------------------------
# Certificates, kubeconfig, main


def run_openssl(args, cwd):
    result = subprocess.run(["openssl"] + args, cwd=cwd, capture_output=True, text=True,
                            timeout=60)
    if result.returncode != 0:
        raise SystemExit(f"kubesim: error: openssl {' '.join(args)}: {result.stderr.strip()}")


def make_certificates(workdir):
    """A CA and a server certificate for 127.0.0.1 and localhost, made with the openssl CLI."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run_openssl(["req", "-x509"] + ec + ["-keyout", "ca.key", "-out", "ca.crt", "-days", "30",
                "-subj", "/CN=kubesim-ca", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign"], workdir)
    run_openssl(["req"] + ec + ["-keyout", "server.key", "-out", "server.csr", "-subj",
                "/CN=kubesim"], workdir)
    with open(os.path.join(workdir, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "basicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n")
    run_openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", "server.crt", "-days", "30", "-extfile",
                 "server.ext"], workdir)


def write_atomically(path, text, mode=0o644):
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def kubeconfig_text(url, ca_pem, token):
    ca_data = base64.b64encode(ca_pem.encode()).decode()
    return (
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        "- name: kubesim\n"
        "  cluster:\n"
        f"    server: {url}\n"
        f"    certificate-authority-data: {ca_data}\n"
        "contexts:\n"
        "- name: kubesim\n"
        "  context:\n"
        "    cluster: kubesim\n"
        "    user: kubesim\n"
        "    namespace: default\n"
        "current-context: kubesim\n"
        "users:\n"
        "- name: kubesim\n"
        "  user:\n"
        f"    token: {token}\n"
        "preferences: {}\n")


def load_seed(sim, path):
    """Creates the objects of a JSON List (or a single object) at start, e.g. Nodes."""
    with open(path) as f:
        doc = json.load(f)
    items = doc.get("items", []) if doc.get("kind", "").endswith("List") else [doc]
    for item in items:
        kind, api_version = item.get("kind"), item.get("apiVersion", "v1")
        resource = next((r for r in RESOURCES if r.kind == kind and r.api_version == api_version),
                        None)
        if resource is None:
            raise SystemExit(f"kubesim: error: {path}: unsupported kind {api_version} {kind}")
        status = item.get("status")
        obj = sim.store.create(resource, item.get("metadata", {}).get("namespace", "default")
                               if resource.namespaced else None, copy.deepcopy(item))
        if status is not None and resource.status:
            sim.store.update(resource, obj["metadata"].get("namespace"), obj["metadata"]["name"],
                             dict(obj, status=status), "status")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Kubernetes API simulator for k8slb's tests")
    parser.add_argument("--workdir", required=True, help="directory for certs and kubeconfig")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1, 0 = any")
    parser.add_argument("--token", default="", help="bearer token (default: random)")
    parser.add_argument("--window", type=int, default=1000,
                        help="changes kept for watch resume and list continue (default 1000)")
    parser.add_argument("--bookmark-interval", type=float, default=1.0,
                        help="seconds between BOOKMARK events (default 1)")
    parser.add_argument("--watch-queue", type=int, default=1000,
                        help="events buffered per watch before a slow watcher is closed")
    parser.add_argument("--seed", action="append", default=[],
                        help="JSON file (object or List) of objects to create at start "
                        "(not when --state-dir holds a previous run's state)")
    parser.add_argument("--state-dir", default="",
                        help="keep the objects, the audit log, the CA and certificates, the "
                        "token and the port here across restarts (like etcd behind a real "
                        "API server)")
    parser.add_argument("--ip-families", default="IPv4",
                        choices=["IPv4", "IPv6", "IPv4,IPv6", "IPv6,IPv4"],
                        help="the cluster's service IP families, primary first: single-stack "
                        "IPv4 (default), single-stack IPv6, or dual-stack")
    args = parser.parse_args(argv)

    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    state_dir = os.path.abspath(args.state_dir) if args.state_dir else ""
    cert_dir = state_dir or workdir
    token = args.token
    port = args.port
    if state_dir:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        token_path = os.path.join(state_dir, "token")
        if not token and os.path.exists(token_path):
            with open(token_path) as f:
                token = f.read().strip()
        port_path = os.path.join(state_dir, "port")
        if not port and os.path.exists(port_path):
            with open(port_path) as f:
                port = int(f.read().strip())
    token = token or secrets.token_hex(16)
    if not (state_dir and all(os.path.exists(os.path.join(cert_dir, name))
                              for name in ("ca.crt", "server.crt", "server.key"))):
        make_certificates(cert_dir)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.path.join(cert_dir, "server.crt"),
                            os.path.join(cert_dir, "server.key"))
    context.set_alpn_protocols(["http/1.1"])

    sim = Simulator(token, max(1, args.window), args.bookmark_interval, max(1, args.watch_queue),
                    state_dir or None)
    sim.store.ip_families = args.ip_families.split(",")
    if not sim.restored:
        for path in args.seed:
            load_seed(sim, path)
    handler = type("SimHandler", (Handler,), {"sim": sim})
    server = Server(("127.0.0.1", port), handler, context)
    port = server.server_address[1]
    url = f"https://127.0.0.1:{port}"
    with open(os.path.join(cert_dir, "ca.crt")) as f:
        ca_pem = f.read()
    if state_dir:
        write_atomically(os.path.join(state_dir, "token"), token + "\n", 0o600)
        write_atomically(os.path.join(state_dir, "port"), f"{port}\n")
        if cert_dir != workdir:
            write_atomically(os.path.join(workdir, "ca.crt"), ca_pem)
    write_atomically(os.path.join(workdir, "token"), token + "\n", 0o600)
    write_atomically(os.path.join(workdir, "kubeconfig"), kubeconfig_text(url, ca_pem, token),
                     0o600)
    write_atomically(os.path.join(workdir, "port"), f"{port}\n")

    def stop(signum, frame):
        sim.stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"ready {url}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        sim.store.drop_watchers()
        server.server_close()
        if state_dir:
            sim.store.save(state_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
