"""The Argo CD health check, run in Lua 5.1 (Argo CD's gopher-lua dialect) through lupa."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lupa import lua51

SCRIPT = Path(__file__).resolve().parents[2] / "charts" / "argocd" / "arcticinferenceservice-health.lua"


def health(obj: dict[str, Any]) -> tuple[str, str]:
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT.read_text())
    return str(result["status"]), str(result["message"])


def resource(generation: int = 2, **status: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "llama", "generation": generation}, "spec": {}}
    if status:
        obj["status"] = status
    return obj


def cond(type_: str, status: str, reason: str = "Reason", message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (resource(), ("Progressing", "Waiting for the arctic-serve operator to report status")),
        (
            resource(observedGeneration=1, conditions=[cond("Ready", "True", "ReplicasReady")]),
            ("Progressing", "The operator has not acted on generation 2 yet"),
        ),
        (
            resource(
                observedGeneration=2,
                conditions=[
                    cond("Ready", "True", "ReplicasReady"),
                    cond(
                        "Degraded",
                        "True",
                        "InvalidSpec",
                        "spec.speculation.hardCap: must be >= spec.speculation.softCap (got 2 < 4)",
                    ),
                ],
            ),
            (
                "Degraded",
                "InvalidSpec: spec.speculation.hardCap: must be >= spec.speculation.softCap (got 2 < 4)",
            ),
        ),
        (
            resource(
                observedGeneration=2,
                conditions=[
                    cond("Progressing", "True", "ModelLoading", "1 of 2 replicas ready"),
                    cond("Ready", "False"),
                ],
            ),
            ("Progressing", "ModelLoading: 1 of 2 replicas ready"),
        ),
        (
            resource(
                observedGeneration=2,
                conditions=[
                    cond("Ready", "True", "ReplicasReady", "2 of 2 replicas ready"),
                    cond("Progressing", "False"),
                    cond("Degraded", "False"),
                ],
            ),
            ("Healthy", "ReplicasReady: 2 of 2 replicas ready"),
        ),
        (
            resource(observedGeneration=2, conditions=[cond("Ready", "False", "NoReadyReplicas")]),
            ("Progressing", "NoReadyReplicas"),
        ),
        (resource(observedGeneration=2), ("Progressing", "Waiting for ready replicas")),
    ],
    ids=[
        "no-status",
        "stale-generation",
        "degraded-wins",
        "progressing",
        "healthy",
        "not-ready",
        "no-conditions",
    ],
)
def test_health_follows_the_operators_status(obj: dict[str, Any], expected: tuple[str, str]) -> None:
    assert health(obj) == expected
