"""Least privilege, as a cluster admin reviewing the chart would check it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart import chartkit

Docs = dict[str, list[dict[str, Any]]]

#: What the operator writes or reads besides discovery: never granted cluster-wide in namespaced mode.
WORKLOAD_RESOURCES = {
    "arcticinferenceservices",
    "arcticinferenceservices/status",
    "arcticinferenceservices/scale",
    "arcticinferenceservices/finalizers",
    "deployments",
    "statefulsets",
    "services",
    "poddisruptionbudgets",
    "secrets",
    "events",
    "servicemonitors",
    "podmonitors",
}
READ_VERBS = {"get", "list", "watch"}


def grants(rules: list[dict[str, Any]]) -> dict[str, set[str]]:
    """resource (group-qualified when not core) -> verbs, merged over all rules."""
    out: dict[str, set[str]] = {}
    for rule in rules:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                key = f"{resource}.{group}" if group else resource
                out.setdefault(key, set()).update(rule["verbs"])
    return out


def resources_of(rules: list[dict[str, Any]]) -> set[str]:
    return {r for rule in rules for r in rule.get("resources", [])}


def the(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = chartkit.by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.mark.parametrize("scenario", ["namespaced", "namespaced-monitoring"])
def test_namespaced_mode_grants_no_workload_permission_cluster_wide(rendered: Docs, scenario: str) -> None:
    docs = rendered[scenario]
    for cluster_role in chartkit.by_kind(docs, "ClusterRole"):
        rules = cluster_role["rules"]
        assert not resources_of(rules) & WORKLOAD_RESOURCES, cluster_role["metadata"]["name"]
        # what is left cluster-wide is read-only discovery
        assert grants(rules) == {
            "customresourcedefinitions.apiextensions.k8s.io": {"get", "list", "watch"},
            "namespaces": {"list", "watch"},
        }


@pytest.mark.parametrize("scenario", ["namespaced", "namespaced-monitoring"])
def test_namespaced_mode_puts_the_workload_permissions_in_the_watched_namespace(
    rendered: Docs, scenario: str
) -> None:
    docs = rendered[scenario]
    role, binding = the(docs, "Role"), the(docs, "RoleBinding")
    assert role["metadata"]["namespace"] == chartkit.WATCH_NAMESPACE
    assert binding["metadata"]["namespace"] == chartkit.WATCH_NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    sa = the(docs, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": chartkit.RELEASE_NAMESPACE}
    ]
    g = grants(role["rules"])
    assert g["arcticinferenceservices.serving.arctic-serve.dev"] >= {"get", "list", "watch", "patch"}
    assert g["deployments.apps"] >= {"create", "update", "delete"}


@pytest.mark.parametrize("scenario", ["cluster-wide", "cluster-wide-monitoring"])
def test_cluster_wide_mode_uses_one_cluster_role_and_no_role(rendered: Docs, scenario: str) -> None:
    docs = rendered[scenario]
    assert chartkit.by_kind(docs, "Role") == [] and chartkit.by_kind(docs, "RoleBinding") == []
    role, binding = the(docs, "ClusterRole"), the(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["namespace"] == chartkit.RELEASE_NAMESPACE
    g = grants(role["rules"])
    # cluster-wide kopf does not need to list namespaces
    assert "namespaces" not in g
    assert g["customresourcedefinitions.apiextensions.k8s.io"] == READ_VERBS


@pytest.mark.parametrize("scenario", list(chartkit.SCENARIOS))
def test_the_operator_gets_exactly_the_verbs_it_needs(rendered: Docs, scenario: str) -> None:
    docs = rendered[scenario]
    kind = "Role" if "namespaced" in scenario else "ClusterRole"
    g = grants(the(docs, kind)["rules"])
    crud = {"get", "list", "watch", "create", "update", "patch", "delete"}
    expected = {
        "arcticinferenceservices.serving.arctic-serve.dev": {"get", "list", "watch", "patch", "update"},
        "arcticinferenceservices/status.serving.arctic-serve.dev": {"get", "patch", "update"},
        "arcticinferenceservices/scale.serving.arctic-serve.dev": {"get", "patch", "update"},
        "arcticinferenceservices/finalizers.serving.arctic-serve.dev": {"update"},
        "deployments.apps": crud,
        "statefulsets.apps": crud,
        "services": crud,
        "poddisruptionbudgets.policy": crud,
        # the admin token: no list/watch, so other Secrets of the namespace cannot be enumerated
        "secrets": {"get", "create"},
        "events": {"create", "patch"},
        # engine pods, read only and never watched: listed by a reconcile (while the workload is
        # not all ready) and by the control loop
        "pods": {"get", "list"},
    }
    if "monitoring" in scenario:
        expected["servicemonitors.monitoring.coreos.com"] = crud
        expected["podmonitors.monitoring.coreos.com"] = crud
    if kind == "ClusterRole":
        expected["customresourcedefinitions.apiextensions.k8s.io"] = READ_VERBS
    assert g == expected
    assert all("*" not in verbs for verbs in g.values())


def test_no_monitoring_permissions_unless_monitoring_is_enabled(rendered: Docs) -> None:
    for scenario in ("cluster-wide", "namespaced"):
        rules = [r for d in rendered[scenario] if d["kind"] in ("Role", "ClusterRole") for r in d["rules"]]
        assert "servicemonitors" not in resources_of(rules)
        assert chartkit.by_kind(rendered[scenario], "ServiceMonitor") == []


def test_cluster_scoped_names_include_the_release_namespace(rendered: Docs) -> None:
    """Two releases named alike in two namespaces (e.g. one per team) must not overwrite each
    other's ClusterRole."""
    for doc in rendered["namespaced"]:
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            assert chartkit.RELEASE_NAMESPACE in doc["metadata"]["name"]


def test_the_optional_network_policy_admits_only_the_operators_own_ports() -> None:
    off = chartkit.documents(chartkit.template(chartkit.CHART_DIR))
    assert chartkit.by_kind(off, "NetworkPolicy") == []
    sets = ["networkPolicy.enabled=true", "operator.metricsPort=9100"]
    docs = chartkit.documents(chartkit.template(chartkit.CHART_DIR, sets))
    policy, deployment = the(docs, "NetworkPolicy"), the(docs, "Deployment")
    assert policy["spec"]["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert sorted(p["port"] for p in rule["ports"]) == [8080, 9100] and "from" not in rule
    # the engines' policies are the operator's to make: it is told to, whom to admit, and may
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ARCTIC_OPERATOR_NETWORK_POLICY"]["value"] == "true"
    assert env["ARCTIC_OPERATOR_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    labels = dict(kv.split("=") for kv in env["ARCTIC_OPERATOR_POD_LABELS"]["value"].split(","))
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pod_labels | labels == pod_labels  # the operator's pods carry them
    assert labels == deployment["spec"]["selector"]["matchLabels"]
    rules = [r for d in docs if d["kind"] in ("Role", "ClusterRole") for r in d["rules"]]
    assert [r["verbs"] for r in rules if "networkpolicies" in r["resources"]] == [
        ["get", "list", "watch", "create", "update", "patch", "delete"]
    ]
    off_env = {
        e["name"]: e for e in the(off, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert off_env["ARCTIC_OPERATOR_NETWORK_POLICY"]["value"] == "false"
    assert "ARCTIC_OPERATOR_POD_LABELS" not in off_env
    assert "networkpolicies" not in resources_of(
        [r for d in off if d["kind"] in ("Role", "ClusterRole") for r in d["rules"]]
    )
