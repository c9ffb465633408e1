"""The operator's pod: hardened, probed, one at a time, and told its settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.chart import chartkit

Docs = dict[str, list[dict[str, Any]]]


def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (dep,) = chartkit.by_kind(docs, "Deployment")
    return dep


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment(docs)["spec"]["template"]["spec"]["containers"]
    (c,) = containers
    return c


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


@pytest.mark.parametrize("scenario", list(chartkit.SCENARIOS))
def test_operator_runs_non_root_with_a_read_only_root_filesystem(rendered: Docs, scenario: str) -> None:
    pod = deployment(rendered[scenario])["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's fixed UID
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(rendered[scenario])["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    # a writable /tmp on an emptyDir, since the root filesystem is not
    mounts = {m["mountPath"]: m["name"] for m in container(rendered[scenario])["volumeMounts"]}
    assert "emptyDir" in {v["name"]: v for v in pod["volumes"]}[mounts["/tmp"]]


def test_run_as_user_null_leaves_the_uid_to_the_platform_but_stays_non_root(chart: Path) -> None:
    docs = chartkit.documents(chartkit.template(chart, ["operator.runAsUser=null"]))
    sc = deployment(docs)["spec"]["template"]["spec"]["securityContext"]
    assert "runAsUser" not in sc and sc["runAsNonRoot"] is True


def test_one_active_operator_replaced_not_rolled(rendered: Docs) -> None:
    spec = deployment(rendered["cluster-wide"])["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_probes_hit_the_health_port_and_metrics_are_exposed(rendered: Docs) -> None:
    docs = rendered["cluster-wide"]
    c = container(docs)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    (svc,) = chartkit.by_kind(docs, "Service")
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert (
        svc["spec"]["selector"].items() <= deployment(docs)["spec"]["template"]["metadata"]["labels"].items()
    )


def test_service_monitor_scrapes_the_metrics_port(rendered: Docs) -> None:
    docs = rendered["cluster-wide-monitoring"]
    (sm,) = chartkit.by_kind(docs, "ServiceMonitor")
    (svc,) = chartkit.by_kind(docs, "Service")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [chartkit.RELEASE_NAMESPACE]}


@pytest.mark.parametrize(
    ("scenario", "watch", "monitoring"),
    [
        ("cluster-wide", "", "false"),
        ("namespaced", chartkit.WATCH_NAMESPACE, "false"),
        ("namespaced-monitoring", chartkit.WATCH_NAMESPACE, "true"),
    ],
)
def test_operator_is_told_its_scope_ports_and_runtime_image(
    rendered: Docs, scenario: str, watch: str, monitoring: str
) -> None:
    env = env_of(container(rendered[scenario]))
    assert env["ARCTIC_OPERATOR_WATCH_NAMESPACE"] == watch
    assert env["ARCTIC_OPERATOR_HEALTH_PORT"] == "8080"
    assert env["ARCTIC_OPERATOR_METRICS_PORT"] == "9090"
    assert env["ARCTIC_OPERATOR_MONITORING"] == monitoring
    assert env["ARCTIC_OPERATOR_RUNTIME_IMAGE"] == "ghcr.io/arctic-serve/runtime:0.1.0"
    assert env["ARCTIC_OPERATOR_RUNTIME_CPU_IMAGE"] == "ghcr.io/arctic-serve/runtime-cpu:0.1.0"
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert (env["ARCTIC_OPERATOR_SCRAPE_SECONDS"], env["ARCTIC_OPERATOR_RESYNC_SECONDS"]) == ("5", "60")
    assert env["MALLOC_ARENA_MAX"] == "2"  # the operator's memory (issue 15: RSS < 150 MB at scale)


def test_loop_intervals_reach_the_operator_and_it_accepts_them(chart: Path) -> None:
    from arctic_operator.settings import from_env

    docs = chartkit.documents(
        chartkit.template(chart, ["operator.scrapeSeconds=2", "operator.resyncSeconds=30"])
    )
    env = {k: v for k, v in env_of(container(docs)).items() if isinstance(v, str)}
    # the cost file is mounted from the chart's files/cost/ (ConfigMap keys are the file names)
    env["ARCTIC_OPERATOR_COST_FILE"] = str(
        chart / "files" / "cost" / Path(env["ARCTIC_OPERATOR_COST_FILE"]).name
    )
    settings = from_env(env)
    assert settings.costs.gpu == "H100"
    assert settings.resync_seconds == 30.0
    assert settings.scrape_seconds == 2.0


def test_image_defaults_to_app_version_and_a_digest_pins_it(rendered: Docs, chart: Path) -> None:
    c = container(rendered["cluster-wide"])
    assert c["image"] == "ghcr.io/arctic-serve/operator:0.1.0"
    assert "command" not in c and "args" not in c  # the image's ENTRYPOINT: arctic-serve operator
    digest = "sha256:" + "a" * 64
    docs = chartkit.documents(chartkit.template(chart, [f"operator.image.digest={digest}"]))
    assert container(docs)["image"] == f"ghcr.io/arctic-serve/operator@{digest}"


def test_equal_health_and_metrics_ports_are_refused(chart: Path) -> None:
    proc = chartkit.helm(
        "template", "x", str(chart), "--set", "operator.healthPort=9090", "--set", "operator.metricsPort=9090"
    )
    assert proc.returncode != 0
    assert "operator.healthPort and operator.metricsPort must differ" in proc.stderr
