"""Write the chart's Grafana dashboard: ``python tools/grafana_dashboard.py`` (``--check``: fail if the
committed file differs).

charts/arctic-serve/files/grafana/arctic-serve-control.json shows, per ArcticInferenceService (and per
engine pod): running and waiting requests, KV-cache use, acceptance, the caps the operator configured
against the ones the engine reports, how many steps drafted, the replicas, and the controller's
recent decisions with their reasons. Engine series are selected by namespace and by pod name
(``<service>-...``, the operator's naming); the operator's own series carry ``namespace`` and
``service`` labels. tests/chart/test_grafana.py checks every query against the metric names the
runtime, vLLM and the operator export.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "charts" / "arctic-serve" / "files" / "grafana" / "arctic-serve-control.json"

SERVICE = 'namespace="$namespace", service="$service"'
ENGINE = 'namespace="$namespace", pod=~"$service-.*"'
DRAFTING = "arctic_speculation_drafting_steps_total"
HOLD_REASONS = "WithinHysteresis|Dwell|AcceptanceUnknown|MetricsIncomplete|WithinTolerance|Steady|Stabilizing"


def _target(expr: str, legend: str, ref: str, *, instant: bool = False) -> dict[str, Any]:
    target: dict[str, Any] = {
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "expr": expr,
        "legendFormat": legend,
        "refId": ref,
    }
    if instant:
        target.update(instant=True, range=False, format="table")
    return target


def _panel(
    pid: int, title: str, targets: list[dict[str, Any]], grid: tuple[int, int, int, int], unit: str = "short"
) -> dict[str, Any]:
    x, y, w, h = grid
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": targets,
    }


def _table(
    pid: int, title: str, expr: str, grid: tuple[int, int, int, int], description: str
) -> dict[str, Any]:
    x, y, w, h = grid
    return {
        "id": pid,
        "type": "table",
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [_target(expr, "", "A", instant=True)],
        "transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True}}}],
    }


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "sort": 1,
    }


def dashboard() -> dict[str, Any]:
    panels = [
        _panel(
            1,
            "Replicas: desired (autoscaler) and ready",
            [
                _target(f"arctic_operator_desired_replicas{{{SERVICE}}}", "desired", "A"),
                _target(f"arctic_operator_ready_replicas{{{SERVICE}}}", "ready", "B"),
            ],
            (0, 0, 8, 8),
        ),
        _panel(
            2,
            "Running requests per pod",
            [_target(f"sum by (pod) (vllm:num_requests_running{{{ENGINE}}})", "{{pod}}", "A")],
            (8, 0, 8, 8),
        ),
        _panel(
            3,
            "Waiting requests per pod (queue)",
            [_target(f"sum by (pod) (vllm:num_requests_waiting{{{ENGINE}}})", "{{pod}}", "A")],
            (16, 0, 8, 8),
        ),
        _panel(
            4,
            "KV-cache use per pod",
            [_target(f"avg by (pod) (vllm:kv_cache_usage_perc{{{ENGINE}}})", "{{pod}}", "A")],
            (0, 8, 8, 8),
            "percentunit",
        ),
        _panel(
            5,
            "Acceptance: accepted tokens per draft (1m)",
            [
                _target(
                    f"sum by (pod) (rate(vllm:spec_decode_num_accepted_tokens_total{{{ENGINE}}}[1m])) / "
                    f"sum by (pod) (rate(vllm:spec_decode_num_drafts_total{{{ENGINE}}}[1m]))",
                    "{{pod}}",
                    "A",
                )
            ],
            (8, 8, 8, 8),
        ),
        _panel(
            6,
            "Drafting on: share of engine steps that drafted (1m)",
            [
                _target(
                    f'sum by (pod) (rate({DRAFTING}{{{ENGINE}, drafting="on"}}[1m])) / '
                    f"sum by (pod) (rate({DRAFTING}{{{ENGINE}}}[1m]))",
                    "{{pod}}",
                    "A",
                )
            ],
            (16, 8, 8, 8),
            "percentunit",
        ),
        _panel(
            7,
            "Soft cap: configured (operator) vs effective (engine)",
            [
                _target(f"arctic_operator_configured_soft_cap{{{SERVICE}}}", "configured {{pod}}", "A"),
                _target(f"max by (pod) (arctic_speculation_soft_cap{{{ENGINE}}})", "effective {{pod}}", "B"),
            ],
            (0, 16, 8, 8),
        ),
        _panel(
            8,
            "Hard cap: configured vs effective",
            [
                _target(f"arctic_operator_configured_hard_cap{{{SERVICE}}}", "configured {{pod}}", "A"),
                _target(f"max by (pod) (arctic_speculation_hard_cap{{{ENGINE}}})", "effective {{pod}}", "B"),
            ],
            (8, 16, 8, 8),
        ),
        _panel(
            9,
            "Break-even batch (drafting pays up to) vs running",
            [
                _target(f"arctic_operator_break_even_batch{{{SERVICE}}}", "break-even {{pod}}", "A"),
                _target(f"sum by (pod) (vllm:num_requests_running{{{ENGINE}}})", "running {{pod}}", "B"),
            ],
            (16, 16, 8, 8),
        ),
        _table(
            10,
            "Replica decisions in the last 15 minutes, by reason",
            f"sum by (reason) (increase(arctic_operator_replica_decisions_total{{{SERVICE}}}[15m])) > 0",
            (0, 24, 12, 8),
            "One decision per control pass; status.autoscaling.lastDecisions has the messages with numbers.",
        ),
        _table(
            11,
            "Cap changes in the last 15 minutes, by pod and reason",
            f"sum by (pod, reason) (increase(arctic_operator_cap_decisions_total"
            f'{{{SERVICE}, reason!~"{HOLD_REASONS}"}}[15m])) > 0',
            (12, 24, 12, 8),
            "Decisions that moved a cap (holds left out); status.capController.lastChanges has the messages.",
        ),
        _panel(
            12,
            "Decode step time by batch bucket, with and without drafts (5m, the verify cost's evidence)",
            [
                _target(
                    f"sum by (batch, drafting) (rate(arctic_decode_step_seconds_total{{{ENGINE}}}[5m])) / "
                    f"sum by (batch, drafting) (rate(arctic_decode_steps_total{{{ENGINE}}}[5m]))",
                    "batch <= {{batch}}, drafts {{drafting}}",
                    "A",
                )
            ],
            (0, 32, 24, 8),
            "s",
        ),
    ]
    return {
        "uid": "arctic-serve-control",
        "title": "arctic-serve: control loop",
        "description": "Replicas and speculation caps of an ArcticInferenceService (docs/control.md).",
        "tags": ["arctic-serve", "vllm"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                },
                _variable(
                    "namespace", "Namespace", "label_values(arctic_operator_ready_replicas, namespace)"
                ),
                _variable(
                    "service",
                    "ArcticInferenceService",
                    'label_values(arctic_operator_ready_replicas{namespace="$namespace"}, service)',
                ),
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tools/grafana_dashboard.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--check", action="store_true", help="fail if the committed dashboard is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not DASHBOARD.exists() or DASHBOARD.read_text() != text:
            print(
                f"{DASHBOARD.relative_to(ROOT)} is out of date: run python tools/grafana_dashboard.py",
                file=sys.stderr,
            )
            return 1
        return 0
    DASHBOARD.parent.mkdir(parents=True, exist_ok=True)
    DASHBOARD.write_text(text)
    print(f"wrote {DASHBOARD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
