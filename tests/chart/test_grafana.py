"""The chart's Grafana dashboard and cost curves: every query names only series that the runtime
(our plugin, vLLM) and the operator export; the optional ConfigMap carries the dashboard for Grafana's
sidecar; the operator is pointed at the cost file it can load."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

import arctic_operator.control.kube
import arctic_operator.handlers  # noqa: F401  (registers the reconcile metrics)
from arctic_operator.control.cost import DEFAULT_COSTS, VerifyCosts
from arctic_operator.control.metrics import ALIASES
from arctic_runtime import contract
from tests.chart import chartkit

DASHBOARD = chartkit.CHART_DIR / "files" / "grafana" / "arctic-serve-control.json"
GENERATOR = chartkit.ROOT / "tools" / "grafana_dashboard.py"
COST_FILE = chartkit.CHART_DIR / "files" / "cost" / "h100-llama-3.1-8b.json"

#: PromQL words that look like names: functions, aggregations, keywords.
PROMQL_WORDS = {
    "sum", "avg", "max", "min", "count", "by", "without", "rate", "increase", "irate", "label_values",
    "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
}  # fmt: skip
SELECTOR = re.compile(r'\{[^}]*\}|"[^"]*"|\[[^\]]*\]|\b(?:by|without|on|ignoring)\s*\([^)]*\)')
NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def exported_names() -> set[str]:
    """Series names that exist: the runtime's (contract), vLLM's (the operator reads them under these
    names), the operator's (its prometheus_client registry); counters with their ``_total``."""
    runtime = {value for key, value in vars(contract).items() if key.startswith("METRIC_")}
    vllm = {name for names in ALIASES.values() for name in names}
    operator = {
        name
        for name in REGISTRY._names_to_collectors  # the registry's own index of sample names
        if name.startswith("arctic_operator_")
    }
    names = runtime | vllm | operator
    return names | {f"{name}_total" for name in runtime | vllm}


def queries(dashboard: dict[str, Any]) -> list[str]:
    found = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    found += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return found


LABEL_VALUES = re.compile(r"label_values\((.+),\s*(\w+)\)")


def metric_names(query: str) -> set[str]:
    """Names in a query outside label matchers, strings, ranges and groupings, less PromQL's own words
    (Grafana's ``label_values(series, label)``: the series; the label must be one we set)."""
    variable = LABEL_VALUES.fullmatch(query)
    if variable:
        assert variable.group(2) in {"namespace", "service"}, query
        query = variable.group(1)
    bare = SELECTOR.sub(" ", query)
    return {word for word in NAME.findall(bare) if word not in PROMQL_WORDS}


def test_the_committed_dashboard_is_the_generated_one() -> None:
    proc = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


def test_every_query_uses_exported_metric_names() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = exported_names()
    used: set[str] = set()
    for query in queries(dashboard):
        names = metric_names(query)
        assert names, f"no metric in {query!r}"
        unknown = names - exported
        assert not unknown, f"{query!r} uses {sorted(unknown)}, which nothing exports"
        used |= names
    # what the issue asks to see, per service and pod
    assert {
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:spec_decode_num_accepted_tokens_total",
        "arctic_speculation_soft_cap",
        "arctic_speculation_hard_cap",
        "arctic_speculation_drafting_steps_total",
        "arctic_operator_configured_soft_cap",
        "arctic_operator_desired_replicas",
        "arctic_operator_replica_decisions_total",
        "arctic_operator_cap_decisions_total",
    } <= used


def test_the_name_check_notices_a_wrong_name() -> None:
    assert metric_names('sum by (pod) (rate(vllm:num_requests_runing{pod=~"a-.*"}[1m]))') == {
        "vllm:num_requests_runing"
    }
    assert "vllm:num_requests_runing" not in exported_names()


@pytest.mark.parametrize(
    ("sets", "namespace"), [(["grafana.dashboard.enabled=true"], "arctic-system"), ([], None)]
)
def test_the_dashboard_configmap_is_optional_and_labelled_for_the_sidecar(
    chart: Path, sets: list[str], namespace: str | None
) -> None:
    docs = chartkit.documents(chartkit.template(chart, sets))
    maps = [d for d in chartkit.by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    if namespace is None:
        assert maps == []
        return
    (cm,) = maps
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == namespace
    assert json.loads(cm["data"]["arctic-serve-control.json"]) == json.loads(DASHBOARD.read_text())


def test_the_operator_reads_the_charts_cost_file(chart: Path) -> None:
    docs = chartkit.documents(chartkit.template(chart))
    (cm,) = [d for d in chartkit.by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-costs")]
    (dep,) = chartkit.by_kind(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    path = Path(env["ARCTIC_OPERATOR_COST_FILE"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert str(path.parent) == mounts["costs"]
    assert volumes["costs"]["configMap"]["name"] == cm["metadata"]["name"]
    loaded = VerifyCosts.from_json(json.loads(cm["data"][path.name]))
    assert loaded.by_draft_len == DEFAULT_COSTS.by_draft_len
    assert loaded.batch_sizes == DEFAULT_COSTS.batch_sizes
    assert loaded == VerifyCosts.load(COST_FILE)
    off = chartkit.documents(chartkit.template(chart, ["operator.costProfile="]))
    (dep,) = chartkit.by_kind(off, "Deployment")
    names = {e["name"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "ARCTIC_OPERATOR_COST_FILE" not in names


def test_an_unknown_cost_profile_fails_naming_the_key(chart: Path) -> None:
    result = chartkit.helm(
        "template", "t", str(chart), "--set", "operator.costProfile=b200-llama", check=False
    )
    assert result.returncode != 0
    assert (
        "operator.costProfile: no files/cost/b200-llama.json in the chart; profiles: h100-llama-3.1-8b"
        in (result.stderr)
    )
