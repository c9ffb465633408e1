"""The emulated API server against the real `kubernetes` client and the real kubectl ("emulated API"
tests: they check the emulator, so that operator tests can trust it; they are not Kubernetes e2e)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.emulator.server import EmulatedApiServer, label_matcher

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "docs" / "samples" / "smollm2-cpu.yaml"
GROUP, VERSION, PLURAL = "serving.arctic-serve.dev", "v1alpha1", "arcticinferenceservices"
NS = "default"


def sample() -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load(SAMPLE.read_text(encoding="utf-8"))
    return obj


def deployment(name: str, labels: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels or {"app": name}, **meta},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    }


def http(
    api: EmulatedApiServer, method: str, path: str, body: Any = None, ctype: str = "application/json"
) -> list[dict[str, Any]]:
    """A raw request; the JSON lines of the answer (one for a plain call, several for a watch)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(api.url + path, data=data, method=method, headers={"Content-Type": ctype})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return [json.loads(line) for line in resp.read().splitlines() if line.strip()]


def error_body(exc: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.value.body or "{}")
    return body


def test_deployment_crud_and_selectors(api_client: client.ApiClient) -> None:
    apps: Any = client.AppsV1Api(api_client)
    created = apps.create_namespaced_deployment(NS, deployment("web", {"app": "web", "tier": "front"}))
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert created.metadata.generation == 1
    other = apps.create_namespaced_deployment(NS, deployment("", {"app": "db"}, generateName="db-"))
    assert other.metadata.name.startswith("db-") and len(other.metadata.name) == 8

    def names(**kw: str) -> list[str]:
        return sorted(d.metadata.name for d in apps.list_namespaced_deployment(NS, **kw).items)

    assert names(label_selector="app=web") == ["web"]
    assert names(label_selector="app!=web") == [other.metadata.name]
    assert len(names(label_selector="app in (web, db)")) == 2
    assert names(label_selector="tier") == ["web"]
    assert names(field_selector="metadata.name=web") == ["web"]
    assert names(field_selector="metadata.namespace=kube-system") == []

    patched = apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 4}})
    assert patched.spec.replicas == 4 and patched.metadata.generation == 2
    relabeled = apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"x": "y"}}})
    assert relabeled.metadata.generation == 2  # metadata changes leave generation alone
    assert int(relabeled.metadata.resource_version) > int(patched.metadata.resource_version)

    with pytest.raises(ApiException) as exc:
        apps.create_namespaced_deployment(NS, deployment("web"))
    assert exc.value.status == 409 and error_body(exc)["reason"] == "AlreadyExists"

    apps.delete_namespaced_deployment("web", NS)
    with pytest.raises(ApiException) as exc:
        apps.read_namespaced_deployment("web", NS)
    assert exc.value.status == 404
    assert error_body(exc)["kind"] == "Status" and error_body(exc)["reason"] == "NotFound"


def test_dry_run_create_answers_what_it_would_store_and_stores_nothing(api_client: client.ApiClient) -> None:
    core: Any = client.CoreV1Api(api_client)
    secret = {"metadata": {"name": "tok"}, "stringData": {"token": "t"}}
    would_be = core.create_namespaced_secret(NS, secret, dry_run="All")
    assert would_be.metadata.name == "tok" and would_be.metadata.namespace == NS
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_secret("tok", NS)
    assert exc.value.status == 404
    core.create_namespaced_secret(NS, secret)
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_secret(NS, secret, dry_run="All")
    assert exc.value.status == 409 and error_body(exc)["reason"] == "AlreadyExists"
    core.delete_namespaced_secret("tok", NS)


def test_stale_resource_version_conflicts(api_client: client.ApiClient) -> None:
    core: Any = client.CoreV1Api(api_client)
    cm = core.create_namespaced_config_map(NS, {"metadata": {"name": "cfg"}, "data": {"a": "1"}})
    stale = cm.metadata.resource_version
    cm.data = {"a": "2"}
    core.replace_namespaced_config_map("cfg", NS, cm)
    cm.data = {"a": "3"}  # cm still carries the stale resourceVersion
    with pytest.raises(ApiException) as exc:
        core.replace_namespaced_config_map("cfg", NS, cm)
    assert exc.value.status == 409 and error_body(exc)["reason"] == "Conflict"
    with pytest.raises(ApiException) as exc:
        core.patch_namespaced_config_map(
            "cfg", NS, {"metadata": {"resourceVersion": stale}, "data": {"b": "1"}}
        )
    assert exc.value.status == 409
    assert core.read_namespaced_config_map("cfg", NS).data == {"a": "2"}


def test_custom_resource_defaults_validation_and_patches(
    emulated_api: EmulatedApiServer, api_client: client.ApiClient
) -> None:
    custom: Any = client.CustomObjectsApi(api_client)
    obj = custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, sample())
    assert obj["metadata"]["generation"] == 1
    assert obj["spec"] != sample()["spec"]  # schema defaults were applied
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)
    assert [o["metadata"]["name"] for o in listed["items"]] == ["smollm2-cpu"]

    bad = sample()
    bad["metadata"]["name"] = "bad"
    bad["spec"]["replicas"] = -1
    with pytest.raises(ApiException) as exc:
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, bad)
    assert exc.value.status == 422 and error_body(exc)["reason"] == "Invalid"
    assert "spec.replicas" in error_body(exc)["message"]
    assert error_body(exc)["details"]["causes"][0]["field"] == "spec.replicas"

    cel = sample()
    cel["metadata"]["name"] = "cel"
    cel["spec"]["model"]["source"]["uri"] = "s3://bucket/model"  # hub and uri: the CEL rule fails
    with pytest.raises(ApiException) as exc:
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, cel)
    assert (
        exc.value.status == 422 and "exactly one of hub, pvc, uri or imagePath" in error_body(exc)["message"]
    )

    path = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}/smollm2-cpu"
    patches: list[tuple[str, Any]] = [
        ("application/json-patch+json", [{"op": "replace", "path": "/spec/replicas", "value": 2}]),
        ("application/strategic-merge-patch+json", {"spec": {"replicas": 3}}),
    ]
    for ctype, body in patches:
        assert http(emulated_api, "PATCH", path, body, ctype)[0]["kind"] == "ArcticInferenceService"
    final = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "smollm2-cpu")
    assert final["spec"]["replicas"] == 3 and final["metadata"]["generation"] == 3

    with pytest.raises(ApiException) as exc:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "smollm2-cpu", {"spec": {"replicas": -5}}
        )
    assert exc.value.status == 422


def test_status_subresource_isolation(api_client: client.ApiClient) -> None:
    custom: Any = client.CustomObjectsApi(api_client)
    body = sample()
    body["status"] = {"replicas": 9}
    obj = custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    assert "status" not in obj  # status is dropped on create
    args = (GROUP, VERSION, NS, PLURAL, "smollm2-cpu")
    after = custom.patch_namespaced_custom_object(*args, {"status": {"replicas": 5}, "spec": {"replicas": 2}})
    assert "status" not in after and after["spec"]["replicas"] == 2
    status = custom.patch_namespaced_custom_object_status(
        *args, {"status": {"replicas": 5}, "spec": {"replicas": 7}}
    )
    assert status["status"]["replicas"] == 5 and status["spec"]["replicas"] == 2
    assert status["metadata"]["generation"] == after["metadata"]["generation"]  # status: no bump

    apps: Any = client.AppsV1Api(api_client)
    apps.create_namespaced_deployment(NS, deployment("web"))
    d = apps.patch_namespaced_deployment_status("web", NS, {"status": {"replicas": 1, "readyReplicas": 1}})
    assert d.status.ready_replicas == 1 and d.metadata.generation == 1


def test_scale_subresource(api_client: client.ApiClient) -> None:
    apps: Any = client.AppsV1Api(api_client)
    apps.create_namespaced_deployment(NS, deployment("web"))
    scale = apps.read_namespaced_deployment_scale("web", NS)
    assert scale.spec.replicas == 1 and scale.status.selector == "app=web"
    apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 5}})
    d = apps.read_namespaced_deployment("web", NS)
    assert d.spec.replicas == 5 and d.metadata.generation == 2

    custom: Any = client.CustomObjectsApi(api_client)
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, sample())
    args = (GROUP, VERSION, NS, PLURAL, "smollm2-cpu")
    custom.patch_namespaced_custom_object_status(*args, {"status": {"replicas": 1, "selector": "app=x"}})
    s = custom.patch_namespaced_custom_object_scale(*args, {"spec": {"replicas": 4}})
    assert s["spec"]["replicas"] == 4 and s["status"] == {"replicas": 1, "selector": "app=x"}
    assert custom.get_namespaced_custom_object(*args)["spec"]["replicas"] == 4


def test_watch_events_resume_bookmarks_and_gone(
    emulated_api: EmulatedApiServer, api_client: client.ApiClient
) -> None:
    core: Any = client.CoreV1Api(api_client)
    start = core.list_namespaced_config_map(NS).metadata.resource_version
    core.create_namespaced_config_map(NS, {"metadata": {"name": "w"}, "data": {"a": "1"}})
    core.patch_namespaced_config_map("w", NS, {"data": {"a": "2"}})
    core.delete_namespaced_config_map("w", NS)

    w: Any = watch.Watch()  # type: ignore[no-untyped-call]
    seen = [
        (e["type"], e["object"].metadata.name)
        for e in w.stream(core.list_namespaced_config_map, NS, resource_version=start, timeout_seconds=1)
    ]
    assert seen == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]

    # a live watch sees new events; bookmarks come while idle
    raw: list[dict[str, Any]] = []

    def collect() -> None:
        query = "watch=true&allowWatchBookmarks=true&timeoutSeconds=2"
        raw.extend(http(emulated_api, "GET", f"/api/v1/namespaces/{NS}/configmaps?{query}"))

    t = threading.Thread(target=collect)
    t.start()
    time.sleep(0.5)
    core.create_namespaced_config_map(NS, {"metadata": {"name": "live"}})
    t.join(10)
    types = [e["type"] for e in raw]
    assert "BOOKMARK" in types
    assert [e["object"]["metadata"]["name"] for e in raw if e["type"] == "ADDED"] == ["live"]

    emulated_api.compact()
    events = http(
        emulated_api, "GET", f"/api/v1/namespaces/{NS}/configmaps?watch=true&resourceVersion={start}"
    )
    assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410


def test_owner_reference_cascade_and_finalizers(api_client: client.ApiClient) -> None:
    custom: Any = client.CustomObjectsApi(api_client)
    apps: Any = client.AppsV1Api(api_client)
    core: Any = client.CoreV1Api(api_client)
    owner = custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, sample())
    ref = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ArcticInferenceService",
        "name": "smollm2-cpu",
        "uid": owner["metadata"]["uid"],
        "controller": True,
    }
    apps.create_namespaced_deployment(NS, deployment("child", ownerReferences=[ref]))
    core.create_namespaced_service(NS, {"metadata": {"name": "child", "ownerReferences": [ref]}, "spec": {}})
    core.create_namespaced_config_map(NS, {"metadata": {"name": "bystander"}})

    args = (GROUP, VERSION, NS, PLURAL, "smollm2-cpu")
    custom.patch_namespaced_custom_object(*args, {"metadata": {"finalizers": ["arctic-serve.dev/cleanup"]}})
    deleting = custom.delete_namespaced_custom_object(*args)
    assert deleting["metadata"]["deletionTimestamp"]
    assert custom.get_namespaced_custom_object(*args)["metadata"]["deletionTimestamp"]
    assert apps.read_namespaced_deployment("child", NS)  # the owner still exists

    custom.patch_namespaced_custom_object(*args, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as exc:
        custom.get_namespaced_custom_object(*args)
    assert exc.value.status == 404
    deadline = time.monotonic() + 5
    while apps.list_namespaced_deployment(NS).items and time.monotonic() < deadline:
        time.sleep(0.05)
    assert apps.list_namespaced_deployment(NS).items == []
    assert core.list_namespaced_service(NS).items == []
    assert [c.metadata.name for c in core.list_namespaced_config_map(NS).items] == ["bystander"]


def test_label_selector_parsing() -> None:
    labels = {"a": "1", "b": "2"}
    assert label_matcher("a=1,b in (2,3),!c")(labels)
    assert not label_matcher("a notin (1)")(labels)
    assert label_matcher("")({})


def test_kubectl_apply_get_scale_delete(kubectl: Path, kubeconfig: Path) -> None:
    def run(*args: str) -> str:
        proc = subprocess.run(
            [str(kubectl), "--kubeconfig", str(kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    assert "created" in run("apply", "-f", str(SAMPLE))  # validation on: the server checks fields
    assert "unchanged" in run("apply", "-f", str(SAMPLE))
    assert "smollm2-cpu" in run("get", "ais")
    assert "scaled" in run("scale", "ais", "smollm2-cpu", "--replicas=3")
    assert run("get", "ais", "smollm2-cpu", "-o", "jsonpath={.spec.replicas}/{.metadata.generation}") == "3/2"
    run(
        "patch",
        "ais",
        "smollm2-cpu",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"replicas":3}}',
    )
    assert run("get", "arcticinferenceservices", "-o", "jsonpath={.items[0].status.replicas}") == "3"
    assert "serverside-applied" in run("apply", "--server-side", "-f", str(SAMPLE))
    assert "deleted" in run("delete", "-f", str(SAMPLE), "--timeout=20s")
    assert (
        "No resources found"
        in subprocess.run(
            [str(kubectl), "--kubeconfig", str(kubeconfig), "get", "ais"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stderr
    )


def test_kubectl_apply_rejects_a_typo_and_a_broken_rule_naming_the_field(
    kubectl: Path, kubeconfig: Path, tmp_path: Path
) -> None:
    """With validation on (kubectl's default), kubectl learns from OpenAPI v3 that the server
    validates fields, sends fieldValidation=Strict, and shows the server's answer."""
    sample = yaml.safe_load(SAMPLE.read_text())

    def apply(doc: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "cr.yaml"
        path.write_text(yaml.safe_dump(doc))
        return subprocess.run(
            [str(kubectl), "--kubeconfig", str(kubeconfig), "apply", "-f", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    typo = {**sample, "spec": {**sample["spec"], "replicaz": 2}}
    proc = apply(typo)
    assert proc.returncode != 0 and "replicaz" in proc.stderr, proc.stderr

    both = {**sample, "spec": {**sample["spec"], "replicas": 2, "autoscaling": {"maxReplicas": 3}}}
    proc = apply(both)
    assert proc.returncode != 0 and "spec.replicas" in proc.stderr and "autoscaling" in proc.stderr, (
        proc.stderr
    )

    assert "created" in apply(sample).stdout  # nothing half-applied before: the valid one is new
