"""Fixtures for "emulated API" tests (not Kubernetes e2e): a fresh emulated API server per test with
the project's CRD installed, a kubeconfig pointing at it, a `kubernetes` ApiClient, and real kubectl.

kubectl comes from `make tools`; without it the kubectl tests skip, except under
ARCTIC_REQUIRE_ENGINE=1 (`make test`, CI), where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.chart.chartkit import KUBECTL
from tests.emulator.server import EmulatedApiServer

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "arcticinferenceservices.serving.arctic-serve.dev.yaml"


@pytest.fixture
def emulated_api() -> Iterator[EmulatedApiServer]:
    """A running emulated API server with the ArcticInferenceService CRD established."""
    with EmulatedApiServer(crds=[CRD], bookmark_interval=0.2) as api:
        yield api


@pytest.fixture
def kubeconfig(emulated_api: EmulatedApiServer, tmp_path: Path) -> Path:
    return emulated_api.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def api_client(kubeconfig: Path) -> Iterator[client.ApiClient]:
    """A `kubernetes` ApiClient for the emulated server (the global configuration is untouched)."""
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
    try:
        yield api
    finally:
        api.close()  # type: ignore[no-untyped-call]


@pytest.fixture(scope="session")
def kubectl() -> Path:
    if not KUBECTL.exists():
        reason = f"the real kubectl is missing ({KUBECTL}); run `make tools`"
        if os.environ.get("ARCTIC_REQUIRE_ENGINE") == "1":
            pytest.fail(reason + " (ARCTIC_REQUIRE_ENGINE=1: emulated API tests never skip)")
        pytest.skip(reason)
    return KUBECTL
