"""An emulated Kubernetes API server for "emulated API" tests (never call them Kubernetes e2e).

A small aiohttp application, run on its own thread and event loop, that speaks enough of the
Kubernetes REST API for the real ``kubernetes`` client, kopf and kubectl: legacy discovery, the
built-in resources an operator touches, custom resources registered from a CRD (POSTed or loaded
from YAML), resourceVersion/generation/uid bookkeeping, list and watch (resume, 410 Gone,
bookmarks, timeouts), PUT, the four PATCH flavours, status and scale subresources, finalizers,
ownerReference cascade, and custom resources defaulted and validated against the CRD's
openAPIV3Schema (jsonschema) and its CEL rules (cel-python), answering 422 as the API server does.

Not emulated: auth, admission webhooks, dry runs beyond POST and PATCH (a dryRun=All POST or
PATCH answers what it would store, admitted as a real one, and stores nothing), Table output,
managedFields / field ownership, strategic merge keys (strategic merge is a JSON merge patch whose
lists replace), pagination, protobuf.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import random
import re
import string
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml
from aiohttp import web

from tests.operator.apiserver_rules import CelRules, apply_defaults, schema_errors

Obj = dict[str, Any]
StoreKey = tuple[str, str]  # (group, plural)
ObjKey = tuple[str, str]  # (namespace or "", name)

HISTORY_LIMIT = 10_000
T = TypeVar("T")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------
# Resource types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScalePaths:
    spec_replicas: str = ".spec.replicas"
    status_replicas: str = ".status.replicas"
    label_selector: str | None = None  # None: spec.selector (a LabelSelector), as apps/v1 has it


@dataclass
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: list[str] = field(default_factory=list)
    status: bool = False
    scale: ScalePaths | None = None
    schema: Obj | None = None  # openAPIV3Schema, custom resources only
    singular: str = ""
    categories: list[str] = field(default_factory=list)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def store_key(self) -> StoreKey:
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def discovery(self) -> list[Obj]:
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        main: Obj = {
            "name": self.plural,
            "singularName": self.singular or self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": verbs,
        }
        if self.short_names:
            main["shortNames"] = self.short_names
        if self.categories:
            main["categories"] = self.categories
        out = [main]
        if self.status:
            out.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        if self.scale:
            out.append(
                {
                    "name": f"{self.plural}/scale",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": ["get", "patch", "update"],
                }
            )
        return out


def _builtin(
    gv: str, kind: str, plural: str, namespaced: bool = True, short: str = "", **kw: Any
) -> ResourceType:
    group, _, version = gv.rpartition("/")
    return ResourceType(group, version, kind, plural, namespaced, short.split() if short else [], **kw)


BUILTINS = [
    _builtin("v1", "Namespace", "namespaces", False, "ns", status=True),
    _builtin("v1", "Secret", "secrets"),
    _builtin("v1", "ConfigMap", "configmaps", short="cm"),
    _builtin("v1", "Service", "services", short="svc", status=True),
    _builtin("v1", "Event", "events", short="ev"),
    _builtin("v1", "Pod", "pods", short="po", status=True),
    _builtin("v1", "ServiceAccount", "serviceaccounts", short="sa"),
    _builtin("v1", "PersistentVolumeClaim", "persistentvolumeclaims", short="pvc", status=True),
    _builtin("events.k8s.io/v1", "Event", "events", short="ev"),
    _builtin("apps/v1", "Deployment", "deployments", short="deploy", status=True, scale=ScalePaths()),
    _builtin("apps/v1", "StatefulSet", "statefulsets", short="sts", status=True, scale=ScalePaths()),
    _builtin("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", short="pdb", status=True),
    _builtin(
        "autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", short="hpa", status=True
    ),
    _builtin(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        False,
        "crd crds",
        status=True,
    ),
    _builtin("coordination.k8s.io/v1", "Lease", "leases"),
]


def crd_resource_types(crd: Obj) -> list[ResourceType]:
    spec = crd["spec"]
    names = spec["names"]
    out = []
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        sub = version.get("subresources") or {}
        scale = None
        if "scale" in sub:
            s = sub["scale"]
            scale = ScalePaths(s["specReplicasPath"], s["statusReplicasPath"], s.get("labelSelectorPath"))
        out.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                kind=names["kind"],
                plural=names["plural"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=list(names.get("shortNames", [])),
                status="status" in sub,
                scale=scale,
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                singular=names.get("singular", ""),
                categories=list(names.get("categories", [])),
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> Obj:
        out: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            out["details"] = self.details
        return out


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{rt.qualified} "{name}" not found',
        {"name": name, "group": rt.group, "kind": rt.plural},
    )


def conflict(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        {"name": name, "group": rt.group, "kind": rt.plural},
    )


def invalid(rt: ResourceType, name: str, causes: list[tuple[str, str]]) -> ApiError:
    kind = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    text = ", ".join(f"{f}: Invalid value: {m}" if f else m for f, m in causes)
    return ApiError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {text}',
        {
            "name": name,
            "group": rt.group,
            "kind": rt.kind,
            "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes],
        },
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


# --------------------------------------------------------------------------------------------
# Selectors, paths, patches
# --------------------------------------------------------------------------------------------


def _split_terms(selector: str) -> Iterator[str]:
    depth, start = 0, 0
    for i, ch in enumerate(selector):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            yield selector[start:i].strip()
            start = i + 1
    if selector[start:].strip():
        yield selector[start:].strip()


def label_matcher(selector: str | None) -> Callable[[dict[str, str]], bool]:
    """A predicate over labels for a label selector (=, ==, !=, in, notin, exists, !exists)."""
    terms: list[tuple[str, str, set[str]]] = []  # (key, operator, values)
    for term in _split_terms(selector or ""):
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s*\((.*)\)", term):
            terms.append((m[1], m[2], {v.strip() for v in m[3].split(",")}))
        elif m := re.fullmatch(r"!\s*(\S+)", term):
            terms.append((m[1], "!exists", set()))
        elif m := re.fullmatch(r"([^!=\s]+)\s*(==|=|!=)\s*(\S*)", term):
            terms.append((m[1], "notin" if m[2] == "!=" else "in", {m[3]}))
        else:
            terms.append((term, "exists", set()))

    def matches(labels: dict[str, str]) -> bool:
        for key, op, values in terms:
            ok = {
                "in": labels.get(key) in values,
                "notin": labels.get(key) not in values,
                "exists": key in labels,
                "!exists": key not in labels,
            }[op]
            if not ok:
                return False
        return True

    return matches


def get_path(obj: Any, path: str) -> Any:
    for part in path.strip(".").split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def set_path(obj: Obj, path: str, value: Any) -> None:
    parts = path.strip(".").split(".")
    for part in parts[:-1]:
        obj = obj.setdefault(part, {})
    obj[parts[-1]] = value


def field_matcher(selector: str | None) -> Callable[[Obj], bool]:
    tests: list[Callable[[Obj], bool]] = []
    for term in _split_terms(selector or ""):
        m = re.fullmatch(r"([^!=]+?)\s*(==|=|!=)\s*(.*)", term)
        if not m:
            raise bad_request(f"invalid field selector {term!r}")
        key, op, value = m[1], m[2], m[3]

        def test(obj: Obj, k: str = key, v: str = value, neg: bool = op == "!=") -> bool:
            got = get_path(obj, k)
            return (("" if got is None else str(got)) == v) != neg

        tests.append(test)
    return lambda obj: all(t(obj) for t in tests)


def merge_patch(target: Any, patch: Any, *, strategic: bool = False) -> Any:
    """RFC 7386 JSON merge patch; ``strategic`` also drops ``$``-directives (lists still replace)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if strategic and key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value, strategic=strategic)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def _resolve(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def json_patch(doc: Any, ops: list[Obj]) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    doc = copy.deepcopy(doc)

    def add(parts: list[str], value: Any) -> None:
        parent = _resolve(doc, parts[:-1])
        last = parts[-1]
        if isinstance(parent, list):
            parent.insert(len(parent) if last == "-" else int(last), value)
        else:
            parent[last] = value

    def remove(parts: list[str]) -> Any:
        parent = _resolve(doc, parts[:-1])
        return parent.pop(int(parts[-1]) if isinstance(parent, list) else parts[-1])

    try:
        for op in ops:
            parts = _pointer(op["path"])
            kind = op["op"]
            if not parts and kind in ("add", "replace"):
                doc = copy.deepcopy(op["value"])
            elif kind == "add":
                add(parts, copy.deepcopy(op["value"]))
            elif kind == "remove":
                remove(parts)
            elif kind == "replace":
                remove(parts)
                add(parts, copy.deepcopy(op["value"]))
            elif kind == "move":
                add(parts, remove(_pointer(op["from"])))
            elif kind == "copy":
                add(parts, copy.deepcopy(_resolve(doc, _pointer(op["from"]))))
            elif kind == "test":
                if _resolve(doc, parts) != op["value"]:
                    raise ApiError(422, "Invalid", f"the test operation failed at {op['path']}")
            else:
                raise bad_request(f"unknown JSON patch operation {kind!r}")
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise ApiError(422, "Invalid", f"the JSON patch could not be applied: {exc!r}") from exc
    return doc


# --------------------------------------------------------------------------------------------
# The server state (touched only on the server's event loop)
# --------------------------------------------------------------------------------------------


@dataclass
class Event:
    rv: int
    store: StoreKey
    type: str
    obj: Obj


@dataclass
class Watcher:
    store: StoreKey
    namespace: str | None
    accepts: Callable[[Obj], bool]
    queue: asyncio.Queue[Event | None]


class ApiState:
    def __init__(self) -> None:
        self.types: dict[tuple[str, str, str], ResourceType] = {}
        self.objects: dict[StoreKey, dict[ObjKey, Obj]] = {}
        self.rv = 0
        self.history: deque[Event] = deque(maxlen=HISTORY_LIMIT)
        self.history_floor = 0  # a watch may resume from any resourceVersion >= this
        self.watchers: list[Watcher] = []
        self.cel = CelRules()
        self.loop: asyncio.AbstractEventLoop | None = None
        for rt in BUILTINS:
            self.register(rt)
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(self.types[("", "v1", "namespaces")], None, {"metadata": {"name": ns}})

    # ---- types --------------------------------------------------------------------------

    def register(self, rt: ResourceType) -> None:
        self.types[(rt.group, rt.version, rt.plural)] = rt
        self.objects.setdefault(rt.store_key, {})

    def find_type(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self.types.get((group, version, plural))
        if rt is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return rt

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for group, version, _ in self.types:
            if version not in out.setdefault(group, []):
                out[group].append(version)
        return out

    # ---- bookkeeping ----------------------------------------------------------------------

    def _bump(self, obj: Obj) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def _emit(self, rt: ResourceType, type_: str, obj: Obj) -> None:
        event = Event(self.rv, rt.store_key, type_, copy.deepcopy(obj))
        if len(self.history) == self.history.maxlen:
            self.history_floor = self.history[0].rv
        self.history.append(event)
        for w in self.watchers:
            if self._wants(w, event):
                w.queue.put_nowait(event)

    @staticmethod
    def _wants(w: Watcher, event: Event) -> bool:
        if w.store != event.store:
            return False
        if w.namespace is not None and event.obj["metadata"].get("namespace") != w.namespace:
            return False
        return w.accepts(event.obj)

    def compact(self) -> None:
        """Forget the watch history, as etcd compaction does: older resourceVersions get 410."""
        self.history.clear()
        self.history_floor = self.rv

    def get(self, rt: ResourceType, ns: str | None, name: str) -> Obj:
        obj = self.objects[rt.store_key].get((ns or "", name))
        if obj is None:
            raise not_found(rt, name)
        return obj

    def list(self, rt: ResourceType, ns: str | None, accepts: Callable[[Obj], bool]) -> list[Obj]:
        items = self.objects[rt.store_key].values()
        return [o for o in items if (ns is None or o["metadata"].get("namespace") == ns) and accepts(o)]

    def _uids(self) -> set[str]:
        return {o["metadata"]["uid"] for store in self.objects.values() for o in store.values()}

    # ---- admission ------------------------------------------------------------------------

    def _admit(self, rt: ResourceType, obj: Obj, strict: bool) -> Obj:
        """Defaults and validation: custom resources against their schema and CEL rules."""
        name = obj["metadata"].get("name", "")
        if rt.schema is not None:
            obj = apply_defaults(rt.schema, obj)
            problems = schema_errors(rt.schema, obj, strict=strict)
            if problems:
                raise invalid(rt, name, problems)
            failures = self.cel.failures(rt.schema, obj)
            if failures:
                raise invalid(rt, name, [(f.path, f.message) for f in failures])
        elif rt.scale is not None and rt.group == "apps":
            obj.setdefault("spec", {}).setdefault("replicas", 1)
        elif rt.kind == "Secret" and obj.get("stringData"):
            # write-only convenience field: merged into data (base64), never stored
            data = obj.setdefault("data", {})
            for key, value in obj.pop("stringData").items():
                data[key] = base64.b64encode(str(value).encode()).decode()
        return obj

    # ---- writes ---------------------------------------------------------------------------

    def create(
        self, rt: ResourceType, ns: str | None, body: Obj, strict: bool = False, dry_run: bool = False
    ) -> Obj:
        """POST semantics; with ``dry_run``, the object it would store, nothing stored."""
        obj = copy.deepcopy(body)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise invalid(rt, "", [("metadata.name", "name or generateName is required")])
            suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
            meta["name"] = meta["generateName"] + suffix
        name = meta["name"]
        if rt.namespaced:
            ns = ns or meta.get("namespace") or "default"
            if meta.get("namespace", ns) != ns:
                raise bad_request("the namespace of the provided object does not match the request")
            meta["namespace"] = ns
            if ("", ns) not in self.objects[("", "namespaces")]:
                raise not_found(self.types[("", "v1", "namespaces")], ns)
        else:
            meta.pop("namespace", None)
        if (ns or "", name) in self.objects[rt.store_key]:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{rt.qualified} "{name}" already exists',
                {"name": name, "group": rt.group, "kind": rt.plural},
            )
        if rt.status:
            obj.pop("status", None)
        obj = self._admit(rt, obj, strict)
        meta = obj["metadata"]
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        meta["generation"] = 1
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            meta.pop(k, None)
        if dry_run:
            return obj
        if rt.kind == "CustomResourceDefinition":
            self._establish(obj)
        if rt.kind == "Namespace":
            obj["status"] = {"phase": "Active"}
        self._bump(obj)
        self.objects[rt.store_key][(ns or "", name)] = obj
        self._emit(rt, "ADDED", obj)
        return obj

    def _establish(self, crd: Obj) -> None:
        for rt in crd_resource_types(crd):
            self.register(rt)
        t = now()
        crd["status"] = {
            "acceptedNames": crd["spec"]["names"],
            "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")],
            "conditions": [
                {"type": c, "status": "True", "reason": c, "message": "", "lastTransitionTime": t}
                for c in ("NamesAccepted", "Established")
            ],
        }

    def update(
        self,
        rt: ResourceType,
        ns: str | None,
        name: str,
        new: Obj,
        subresource: str | None,
        strict: bool = False,
        dry_run: bool = False,
    ) -> Obj:
        """PUT semantics for the object or its status (the body is the whole new object); with
        ``dry_run``, the object it would store, nothing stored."""
        old = self.get(rt, ns, name)
        rv = (new.get("metadata") or {}).get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        if subresource == "status":
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = copy.deepcopy(new["status"])
            else:
                result.pop("status", None)
        else:
            result = copy.deepcopy(new)
            result["apiVersion"], result["kind"] = rt.api_version, rt.kind
            meta = result.setdefault("metadata", {})
            if meta.get("name", name) != name:
                raise bad_request("the name of the object does not match the name on the URL")
            for k in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "generation"):
                if k in old["metadata"]:
                    meta[k] = old["metadata"][k]
                else:
                    meta.pop(k, None)
            if rt.status:
                if "status" in old:
                    result["status"] = copy.deepcopy(old["status"])
                else:
                    result.pop("status", None)
        result = self._admit(rt, result, strict)
        result["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if result == old:
            return old  # a no-op write changes nothing, resourceVersion included
        if _spec_part(result) != _spec_part(old):
            result["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        if dry_run:
            return result
        if rt.kind == "CustomResourceDefinition":
            self._establish(result)
        self._bump(result)
        self.objects[rt.store_key][(ns or "", name)] = result
        if result["metadata"].get("deletionTimestamp") and not result["metadata"].get("finalizers"):
            return self._remove(rt, result)
        self._emit(rt, "MODIFIED", result)
        return result

    def patch(
        self,
        rt: ResourceType,
        ns: str | None,
        name: str,
        content_type: str,
        body: bytes,
        subresource: str | None,
        strict: bool = False,
        dry_run: bool = False,
    ) -> Obj:
        try:
            patch = yaml.safe_load(body) if "yaml" in content_type else json.loads(body)
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"the patch is not valid: {exc}") from exc
        if "apply-patch" in content_type and (ns or "", name) not in self.objects[rt.store_key]:
            return self.create(rt, ns, patch, strict)
        old = self.get(rt, ns, name)
        current = self.scale_of(rt, old) if subresource == "scale" else old
        if "json-patch" in content_type:
            new = json_patch(current, patch)
        elif isinstance(patch, dict):
            strategic = "strategic" in content_type or "apply-patch" in content_type
            new = merge_patch(current, patch, strategic=strategic)
        else:
            raise bad_request("a merge patch must be a JSON object")
        if subresource == "scale":
            return self.set_scale(rt, ns, name, new)
        return self.update(rt, ns, name, new, subresource, strict, dry_run)

    def scale_of(self, rt: ResourceType, obj: Obj) -> Obj:
        assert rt.scale is not None
        meta = obj["metadata"]
        if rt.scale.label_selector is None:
            labels = get_path(obj, ".spec.selector.matchLabels") or {}
            selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        else:
            selector = get_path(obj, rt.scale.label_selector) or ""
        status: Obj = {"replicas": get_path(obj, rt.scale.status_replicas) or 0}
        if selector:
            status["selector"] = selector
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": get_path(obj, rt.scale.spec_replicas) or 0},
            "status": status,
        }

    def set_scale(self, rt: ResourceType, ns: str | None, name: str, scale: Obj) -> Obj:
        assert rt.scale is not None
        old = self.get(rt, ns, name)
        rv = (scale.get("metadata") or {}).get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise invalid(rt, name, [("spec.replicas", f"{replicas!r}: must be a non-negative integer")])
        new = copy.deepcopy(old)
        set_path(new, rt.scale.spec_replicas, replicas)
        return self.scale_of(rt, self.update(rt, ns, name, new, None))

    def delete(self, rt: ResourceType, ns: str | None, name: str, options: Obj) -> Obj:
        obj = self.get(rt, ns, name)
        pre = options.get("preconditions") or {}
        if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
            raise conflict(rt, name)
        if options.get("propagationPolicy") == "Orphan" or options.get("orphanDependents"):
            self._orphan(obj["metadata"]["uid"])
        if obj["metadata"].get("finalizers"):
            if obj["metadata"].get("deletionTimestamp"):
                return obj
            obj = copy.deepcopy(obj)
            obj["metadata"]["deletionTimestamp"] = now()
            obj["metadata"]["deletionGracePeriodSeconds"] = 0
            self._bump(obj)
            self.objects[rt.store_key][(ns or "", name)] = obj
            self._emit(rt, "MODIFIED", obj)
            return obj
        return self._remove(rt, obj)

    def _remove(self, rt: ResourceType, obj: Obj) -> Obj:
        meta = obj["metadata"]
        obj = copy.deepcopy(obj)
        del self.objects[rt.store_key][(meta.get("namespace", ""), meta["name"])]
        self._bump(obj)
        self._emit(rt, "DELETED", obj)
        if rt.kind == "Namespace":
            for other in list(self.types.values()):
                if other.namespaced:
                    for item in self.list(other, meta["name"], lambda o: True):
                        self._delete_quietly(other, item)
        if rt.kind == "CustomResourceDefinition":
            self._unregister(obj)
        uid = meta["uid"]
        if self.loop is not None:
            self.loop.call_soon(self.collect_garbage, uid)
        else:
            self.collect_garbage(uid)
        return obj

    def _unregister(self, crd: Obj) -> None:
        for rt in crd_resource_types(crd):
            self.types.pop((rt.group, rt.version, rt.plural), None)
        rts = crd_resource_types(crd)
        if rts:
            store = self.objects.pop(rts[0].store_key, {})
            for obj in store.values():
                self.rv += 1
                obj = copy.deepcopy(obj)
                obj["metadata"]["resourceVersion"] = str(self.rv)
                self._emit(rts[0], "DELETED", obj)

    def _delete_quietly(self, rt: ResourceType, obj: Obj) -> None:
        meta = obj["metadata"]
        with contextlib.suppress(ApiError):
            self.delete(rt, meta.get("namespace"), meta["name"], {})

    def _type_of(self, obj: Obj) -> ResourceType | None:
        group = obj["apiVersion"].rpartition("/")[0]
        for rt in self.types.values():
            if rt.group == group and rt.kind == obj["kind"]:
                return rt
        return None

    def _orphan(self, uid: str) -> None:
        for store in list(self.objects.values()):
            for obj in list(store.values()):
                refs = obj["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == uid for r in refs):
                    rt = self._type_of(obj)
                    if rt is not None:
                        new = copy.deepcopy(obj)
                        new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                        meta = obj["metadata"]
                        self.update(rt, meta.get("namespace"), meta["name"], new, None)

    def collect_garbage(self, uid: str) -> None:
        """Background cascade: dependents whose owners are all gone are deleted."""
        live = self._uids()
        for store in list(self.objects.values()):
            for obj in list(store.values()):
                refs = obj["metadata"].get("ownerReferences") or []
                if not any(r.get("uid") == uid for r in refs):
                    continue
                rt = self._type_of(obj)
                if rt is None:
                    continue
                meta = obj["metadata"]
                if any(r.get("uid") in live for r in refs):
                    new = copy.deepcopy(obj)
                    new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                    self.update(rt, meta.get("namespace"), meta["name"], new, None)
                else:
                    self._delete_quietly(rt, obj)


def _spec_part(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


class EmulatedApiServer:
    """The emulated API server on 127.0.0.1:<free port>, on a thread of its own.

    ``with EmulatedApiServer(crds=[path]) as api: api.write_kubeconfig(tmp / "kubeconfig")``.
    """

    def __init__(self, crds: list[Path] | None = None, bookmark_interval: float = 1.0) -> None:
        self.state = ApiState()
        self.bookmark_interval = bookmark_interval
        self.port = 0
        self._crds = list(crds or [])
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> EmulatedApiServer:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self.state.loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # reported to start()
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="emulated-apiserver", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]
        for path in self._crds:
            self.load_crd(path)
        return self

    async def _serve(self) -> None:
        self._closing = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return

        async def shutdown() -> None:
            assert self._closing is not None
            self._closing.set()
            for w in self.state.watchers:
                w.queue.put_nowait(None)
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop = self._thread = None

    def __enter__(self) -> EmulatedApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, fn: Callable[[ApiState], T]) -> T:
        """Run ``fn(state)`` on the server's loop (the only thread that touches the state)."""
        assert self._loop is not None, "the server is not running"

        async def go() -> T:
            return fn(self.state)

        return asyncio.run_coroutine_threadsafe(go(), self._loop).result(30)

    def load_crd(self, path: Path) -> Obj:
        """Create a CustomResourceDefinition from a YAML file, as `kubectl apply` would."""
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        rt = self.state.types[("apiextensions.k8s.io", "v1", "customresourcedefinitions")]
        return self.call(lambda s: s.create(rt, None, crd))

    def compact(self) -> None:
        self.call(lambda s: s.compact())

    def kopf_login(self, **_: Any) -> Any:
        """A kopf login handler for this server (``kopf.on.login(registry=...)(api.kopf_login)``):
        kopf's kubeconfig login reads $KUBECONFIG when `kubernetes` is first imported."""
        import kopf

        return kopf.ConnectionInfo(server=self.url, scheme="Bearer", token="emulated", insecure=True)

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulated", "cluster": {"server": self.url}}],
            "users": [{"name": "emulated", "user": {"token": "emulated"}}],
            "contexts": [
                {
                    "name": "emulated",
                    "context": {"cluster": "emulated", "user": "emulated", "namespace": namespace},
                }
            ],
            "current-context": "emulated",
        }
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    # ---- routing --------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._dispatch(request)
        except ApiError as exc:
            return _json(exc.status(), exc.code)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        state = self.state
        if parts == ["version"]:
            return _json(
                {
                    "major": "1",
                    "minor": "37",
                    "gitVersion": "v1.37.0-emulated",
                    "platform": "linux/amd64",
                    "goVersion": "go1.25",
                    "compiler": "gc",
                    "buildDate": "2026-01-01T00:00:00Z",
                    "gitCommit": "emulated",
                    "gitTreeState": "clean",
                }
            )
        if parts == ["api"]:
            return _json({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        if parts[:2] == ["openapi", "v3"]:
            return _json(self._openapi_v3("/".join(parts[2:])))
        if parts == ["apis"]:
            groups = [self._group(g, vs) for g, vs in sorted(state.groups().items()) if g]
            return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        if len(parts) == 2 and parts[0] == "apis":
            versions = state.groups().get(parts[1])
            if not versions:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return _json(self._group(parts[1], versions))
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            resources = [
                entry
                for (g, v, _), rt in sorted(state.types.items())
                if (g, v) == (group, version)
                for entry in rt.discovery()
            ]
            if not resources:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            gv = f"{group}/{version}" if group else version
            return _json(
                {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}
            )
        ns: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            candidate = state.types.get((group, version, rest[2]))
            if candidate is not None and candidate.namespaced:
                ns, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rt = state.find_type(group, version, rest[0])
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if (
            (sub == "status" and not rt.status)
            or (sub == "scale" and not rt.scale)
            or sub
            not in (
                None,
                "status",
                "scale",
            )
        ):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if rt.namespaced and name is not None and ns is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rt.namespaced and ns is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return await self._resource(request, rt, ns, name, sub)

    def _openapi_v3(self, gv_path: str) -> Obj:
        """OpenAPI v3 as far as clients read it: the root lists a document per group-version, and
        each document has every resource's paths with the PATCH operation's group-version-kind and
        its ``fieldValidation`` parameter. kubectl reads that to learn the server validates fields
        itself (``fieldValidation=Strict``: unknown fields and schema/CEL errors are rejected here),
        so plain ``kubectl apply`` needs no client-side schemas."""
        served: dict[str, list[ResourceType]] = {}
        for (g, v, _), rt in sorted(self.state.types.items()):
            served.setdefault(f"apis/{g}/{v}" if g else f"api/{v}", []).append(rt)
        if not gv_path:
            return {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash=emulated"} for gv in served}}
        if gv_path not in served:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        paths: Obj = {}
        for rt in served[gv_path]:
            scope = "/namespaces/{namespace}" if rt.namespaced else ""
            gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
            patch = {
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [
                    {"name": name, "in": "query", "schema": {"type": "string"}}
                    for name in ("dryRun", "fieldManager", "fieldValidation", "force")
                ],
                "responses": {"200": {"description": "OK"}},
            }
            paths[f"/{gv_path}{scope}/{rt.plural}/{{name}}"] = {"patch": patch}
        info = {"title": "Kubernetes (emulated)", "version": "v1.37.0"}
        return {"openapi": "3.0.0", "info": info, "paths": paths, "components": {"schemas": {}}}

    @staticmethod
    def _group(group: str, versions: list[str]) -> Obj:
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": entries,
            "preferredVersion": entries[0],
        }

    async def _resource(
        self, request: web.Request, rt: ResourceType, ns: str | None, name: str | None, sub: str | None
    ) -> web.StreamResponse:
        state, q, method = self.state, request.query, request.method
        strict = q.get("fieldValidation") == "Strict"
        if method == "GET" and name is None:
            labels = label_matcher(q.get("labelSelector"))
            fields = field_matcher(q.get("fieldSelector"))

            def accepts(o: Obj) -> bool:
                return labels(o["metadata"].get("labels") or {}) and fields(o)

            if q.get("watch") in ("true", "1"):
                return await self._watch(request, rt, ns, accepts)
            items = [self._out(rt, o) for o in state.list(rt, ns, accepts)]
            items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
            return _json(
                {
                    "kind": f"{rt.kind}List",
                    "apiVersion": rt.api_version,
                    "metadata": {"resourceVersion": str(state.rv)},
                    "items": items,
                }
            )
        if method == "GET":
            assert name is not None
            obj = state.get(rt, ns, name)
            return _json(state.scale_of(rt, obj) if sub == "scale" else self._out(rt, obj))
        body = await request.read()
        if "protobuf" in request.headers.get("Content-Type", ""):
            raise ApiError(415, "UnsupportedMediaType", "protobuf is not supported: send JSON")
        if method == "POST" and name is None:
            dry_run = q.get("dryRun") == "All"
            return _json(self._out(rt, state.create(rt, ns, self._body(body), strict, dry_run)), 201)
        if method == "DELETE" and name is None:
            labels = label_matcher(q.get("labelSelector"))
            doomed = state.list(rt, ns, lambda o: labels(o["metadata"].get("labels") or {}))
            for obj in doomed:
                state.delete(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"], {})
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
        if name is None:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on a collection")
        if method == "PUT":
            new = self._body(body)
            if sub == "scale":
                return _json(state.set_scale(rt, ns, name, new))
            return _json(self._out(rt, state.update(rt, ns, name, new, sub, strict)))
        if method == "PATCH" and q.get("dryRun") == "All":
            # what the patch would store, nothing stored (a create by apply: accepted unchecked; the
            # real control plane's tier tests rejections)
            if (ns or "", name) not in state.objects[rt.store_key] or sub == "scale":
                return _json(self._out(rt, self._body(body)))
            ctype = request.headers.get("Content-Type", "application/merge-patch+json")
            return _json(self._out(rt, state.patch(rt, ns, name, ctype, body, sub, strict, dry_run=True)))
        if method == "PATCH":
            ctype = request.headers.get("Content-Type", "application/merge-patch+json")
            result = state.patch(rt, ns, name, ctype, body, sub, strict)
            return _json(result if sub == "scale" else self._out(rt, result))
        if method == "DELETE":
            options = self._body(body) if body.strip() else {}
            for key in ("propagationPolicy", "orphanDependents"):
                if key in q:
                    options[key] = q[key]
            return _json(self._out(rt, state.delete(rt, ns, name, options)))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    @staticmethod
    def _body(body: bytes) -> Obj:
        try:
            obj = yaml.safe_load(body) if body[:1] not in (b"{", b"[") else json.loads(body)
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"the request body is not valid: {exc}") from exc
        if not isinstance(obj, dict):
            raise bad_request("the request body must be an object")
        return obj

    @staticmethod
    def _out(rt: ResourceType, obj: Obj) -> Obj:
        out = copy.deepcopy(obj)
        out["apiVersion"] = rt.api_version
        return out

    async def _watch(
        self, request: web.Request, rt: ResourceType, ns: str | None, accepts: Callable[[Obj], bool]
    ) -> web.StreamResponse:
        state, q = self.state, request.query
        loop = asyncio.get_running_loop()
        timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else None
        deadline = None if timeout is None else loop.time() + timeout
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        watcher = Watcher(rt.store_key, ns, accepts, asyncio.Queue())
        rv_param = q.get("resourceVersion", "")
        backlog: list[Obj] = []
        gone = False
        if rv_param in ("", "0"):
            for obj in sorted(
                state.list(rt, ns, accepts), key=lambda o: int(o["metadata"]["resourceVersion"])
            ):
                backlog.append({"type": "ADDED", "object": self._out(rt, obj)})
        else:
            try:
                since = int(rv_param)
            except ValueError as exc:
                raise bad_request(f"invalid resourceVersion {rv_param!r}") from exc
            if since < state.history_floor:
                gone = True
            else:
                for event in state.history:
                    if event.rv > since and state._wants(watcher, event):
                        backlog.append({"type": event.type, "object": self._out(rt, event.obj)})
        if not gone:
            state.watchers.append(watcher)  # registered with the backlog: no event falls between
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            if gone:
                status = ApiError(
                    410, "Expired", f"too old resource version: {rv_param} ({state.history_floor})"
                ).status()
                await response.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
                return response
            for item in backlog:
                await response.write(json.dumps(item).encode() + b"\n")
            assert self._closing is not None
            while not self._closing.is_set():
                wait = self.bookmark_interval if bookmarks else 3600.0
                if deadline is not None:
                    wait = min(wait, deadline - loop.time())
                    if wait <= 0:
                        break
                try:
                    queued = await asyncio.wait_for(watcher.queue.get(), wait)
                except TimeoutError:
                    if bookmarks and (deadline is None or loop.time() < deadline):
                        mark = {
                            "type": "BOOKMARK",
                            "object": {
                                "kind": rt.kind,
                                "apiVersion": rt.api_version,
                                "metadata": {"resourceVersion": str(state.rv)},
                            },
                        }
                        await response.write(json.dumps(mark).encode() + b"\n")
                    continue
                if queued is None:
                    break
                line = {"type": queued.type, "object": self._out(rt, queued.obj)}
                await response.write(json.dumps(line).encode() + b"\n")
        except ConnectionResetError:
            pass
        finally:
            if watcher in state.watchers:
                state.watchers.remove(watcher)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response
