"""The operator's settings come from the variables the Helm chart sets; bad values name the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from arctic_operator.settings import OperatorSettings, SettingsError, from_env


def test_defaults_and_the_charts_variables() -> None:
    assert from_env({}) == OperatorSettings()
    s = from_env(
        {
            "ARCTIC_OPERATOR_WATCH_NAMESPACE": "ml",
            "ARCTIC_OPERATOR_HEALTH_PORT": "8081",
            "ARCTIC_OPERATOR_METRICS_PORT": "0",
            "ARCTIC_OPERATOR_LOG_LEVEL": "DEBUG",
            "ARCTIC_OPERATOR_RUNTIME_IMAGE": "registry.local/runtime:1",
            "ARCTIC_OPERATOR_MONITORING": "true",
            "ARCTIC_OPERATOR_RESYNC_SECONDS": "15",
        }
    )
    assert (s.watch_namespace, s.health_port, s.metrics_port, s.log_level) == ("ml", 8081, 0, "debug")
    assert s.runtime_image == "registry.local/runtime:1" and s.monitoring and s.resync_seconds == 15.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ARCTIC_OPERATOR_HEALTH_PORT", "0"),
        ("ARCTIC_OPERATOR_METRICS_PORT", "70000"),
        ("ARCTIC_OPERATOR_LOG_LEVEL", "loud"),
        ("ARCTIC_OPERATOR_MONITORING", "yes"),
        ("ARCTIC_OPERATOR_RESYNC_SECONDS", "0.1"),
        ("ARCTIC_OPERATOR_NETWORK_POLICY", "on"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{name}: must be"):
        from_env({name: value})


def test_network_policy_selects_the_operators_pods_in_its_namespace() -> None:
    assert from_env({}).admin_peer is None
    s = from_env(
        {
            "ARCTIC_OPERATOR_NETWORK_POLICY": "true",
            "ARCTIC_OPERATOR_NAMESPACE": "arctic-system",
            "ARCTIC_OPERATOR_POD_LABELS": "app.kubernetes.io/name=arctic-serve,"
            "app.kubernetes.io/instance=rel",
        }
    )
    assert s.admin_peer == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "arctic-system"}},
        "podSelector": {
            "matchLabels": {"app.kubernetes.io/instance": "rel", "app.kubernetes.io/name": "arctic-serve"}
        },
    }
    with pytest.raises(
        SettingsError, match=r"^ARCTIC_OPERATOR_NAMESPACE: must name the operator's namespace"
    ):
        from_env({"ARCTIC_OPERATOR_NETWORK_POLICY": "true", "ARCTIC_OPERATOR_POD_LABELS": "a=b"})
    with pytest.raises(SettingsError, match=r"^ARCTIC_OPERATOR_POD_LABELS: must be key=value pairs"):
        from_env({"ARCTIC_OPERATOR_NETWORK_POLICY": "true", "ARCTIC_OPERATOR_NAMESPACE": "x"})


def test_operator_command_fails_in_one_line_on_a_bad_setting() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "arctic_runtime.cli", "operator"],
        env={"ARCTIC_OPERATOR_LOG_LEVEL": "loud", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "arctic-serve operator: ARCTIC_OPERATOR_LOG_LEVEL: must be debug, info, warning or error, got 'loud'"
    )
