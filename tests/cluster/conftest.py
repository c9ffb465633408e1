"""The real-control-plane tier: one Kubernetes 1.37.2 control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok GPU nodes; ``tools/cluster``) for the whole session,
the chart installed into it with the real helm, and the operator as one local process that acts with
the chart's ServiceAccount token (so RBAC is the chart's, for real).

Without Go (the control plane is built from its Go modules) the tier skips with one line, except
under ARCTIC_REQUIRE_ENGINE=1 (`make test`, CI), where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.chart.chartkit import HELM, KUBECTL
from tools.cluster.cluster import LocalCluster, kubeconfig

REPO = Path(__file__).resolve().parents[2]

RELEASE = "arctic-serve"
OPERATOR_NS = "arctic-system"
OPERATOR_SA = "arctic-serve-operator"
#: Where the tests' ArcticInferenceServices live: Pod Security "restricted" is enforced there.
APPS_NS = "apps"


def _require(ok: bool, reason: str) -> None:
    if ok:
        return
    if os.environ.get("ARCTIC_REQUIRE_ENGINE") == "1":
        pytest.fail(reason + " (ARCTIC_REQUIRE_ENGINE=1: the cluster tier never skips)")
    pytest.skip(reason)


class Kube:
    """kubectl and helm against the session's cluster, as the admin."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(KUBECTL), "--kubeconfig", str(self.cluster.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def helm(self, *args: str) -> str:
        proc = subprocess.run(
            [str(HELM), "--kubeconfig", str(self.cluster.kubeconfig), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
        )
        assert proc.returncode == 0, f"helm {' '.join(args)} failed: {proc.stderr.strip()}"
        return proc.stdout

    def get(self, kind: str, name: str, namespace: str = APPS_NS) -> dict[str, Any] | None:
        proc = self.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
        if proc.returncode != 0:
            assert "NotFound" in proc.stderr, proc.stderr
            return None
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def apply(self, manifest: dict[str, Any] | str, namespace: str = APPS_NS) -> None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        self.kubectl("apply", "-n", namespace, "-f", "-", input=text)

    def condition(self, name: str, type_: str, namespace: str = APPS_NS) -> dict[str, Any]:
        obj = self.get("ais", name, namespace) or {}
        return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")

    def wait_condition(
        self, name: str, type_: str, status: str, reason: str | None = None, timeout: float = 60.0
    ) -> dict[str, Any]:
        def ok() -> dict[str, Any] | None:
            c = self.condition(name, type_)
            if c.get("status") == status and (reason is None or c.get("reason") == reason):
                return c
            return None

        result: dict[str, Any] = self.wait_for(
            f"ais/{name} {type_}={status}{f' ({reason})' if reason else ''}; "
            f"conditions now: {(self.get('ais', name) or {}).get('status')}",
            ok,
            timeout,
        )
        return result


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    _require(shutil.which("go") is not None, "Go is missing: the control plane is built from its Go modules")
    _require(KUBECTL.exists() and HELM.exists(), f"helm/kubectl missing ({KUBECTL.parent}); run `make tools`")
    # three nodes of 8 GPUs: the served samples ask for 17 GPUs at once, one pod of them for a whole node
    local = LocalCluster(tmp_path_factory.mktemp("cluster"), nodes=3)
    try:
        local.start()
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def kube(cluster: LocalCluster) -> Kube:
    kube = Kube(cluster)
    kube.helm(
        "install",
        RELEASE,
        str(REPO / "charts" / "arctic-serve"),
        "-n",
        OPERATOR_NS,
        "--create-namespace",
        "--set",
        "operator.replicas=0",
    )
    kube.kubectl("create", "namespace", APPS_NS)
    kube.kubectl(
        "label",
        "namespace",
        APPS_NS,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    return kube


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OperatorProcess:
    """``arctic-serve operator`` as a local process with the chart's ServiceAccount identity."""

    #: Every resource reconciled this often (the chart's default is 60 s): drift tests wait less.
    RESYNC_SECONDS = 3

    def __init__(
        self, kube: Kube, workdir: Path, metrics_port: bool = False, env: dict[str, str] | None = None
    ) -> None:
        self.kube, self.workdir = kube, workdir
        self.env = dict(env or {})
        """Extra environment (the settings the chart's Deployment would give the operator)."""
        self.metrics_port = _free_port() if metrics_port else 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "operator.log"
        token = kube.kubectl(
            "create", "token", OPERATOR_SA, "-n", OPERATOR_NS, "--duration", "2h"
        ).stdout.strip()
        self.kubeconfig = workdir / "operator-kubeconfig"
        cl = kube.cluster
        self.kubeconfig.write_text(kubeconfig(cl.server, cl.workdir / "pki", {"token": token}))
        deployment = json.loads(kube.kubectl("get", "deployment", "-n", OPERATOR_NS, "-o", "json").stdout)[
            "items"
        ][0]
        (container,) = [
            c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "operator"
        ]
        self.process_env = {
            e["name"]: e["value"]
            for e in container.get("env", [])
            if "value" in e and not e["name"].startswith("ARCTIC_OPERATOR_")
        }
        """The chart's process settings for the operator's container (its literal env values other
        than the operator's own settings, e.g. MALLOC_ARENA_MAX): the local process runs as the
        chart's Deployment would."""

    def start(self) -> None:
        env = {
            **os.environ,
            **self.process_env,
            "KUBECONFIG": str(self.kubeconfig),
            "ARCTIC_OPERATOR_RESYNC_SECONDS": str(self.RESYNC_SECONDS),
            "ARCTIC_OPERATOR_HEALTH_PORT": str(_free_port()),
            "ARCTIC_OPERATOR_METRICS_PORT": str(self.metrics_port),
            # this checkout's code, also where .venv holds another checkout in editable mode
            "PYTHONPATH": os.pathsep.join([str(REPO / "runtime"), str(REPO / "operator")]),
            **self.env,
        }
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "arctic_runtime.cli", "operator"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def metrics(self) -> str:
        """The operator's own /metrics (needs ``metrics_port=True``)."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            return str(r.read().decode())

    def peak_rss_kb(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    def forbidden(self) -> list[str]:
        """Lines of the operator's log where the API server refused it something (RBAC)."""
        return [
            line
            for line in self.log.read_text(errors="replace").splitlines()
            if "403" in line and "orbidden" in line
        ]


@pytest.fixture(scope="session")
def operator(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    op = OperatorProcess(kube, tmp_path_factory.mktemp("operator"))
    op.start()
    try:
        yield op
    finally:
        op.stop()
