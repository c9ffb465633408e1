"""A real Kubernetes control plane on loopback, without Docker: ``make cluster`` / ``make cluster-down``.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler (Kubernetes 1.37.2) and kwok
(simulated nodes; pods on them turn Running/Ready) are built from their Go modules by
``tools/cluster/build.sh`` (cached) and started here as plain processes:

- certificates are generated with ``openssl`` (a CA, the API server's serving certificate for
  127.0.0.1/localhost, an admin client certificate in ``system:masters``, the service-account
  signing key), so authentication, RBAC, admission (Pod Security included) and the TokenRequest API
  are Kubernetes' own;
- the controller manager runs every default controller except node lifecycle (kwok's nodes send no
  heartbeats), so Deployments make ReplicaSets and Pods, garbage collection is real;
- ``nodes`` kwok nodes advertise ``nvidia.com/gpu`` capacity (``gpus`` each), 64 CPUs and 512 GiB.

``python tools/cluster/cluster.py up [--dir D]`` starts it in the background and writes
``D/kubeconfig`` (default ``.cluster/``); ``down`` stops it (pids in ``D/pids``). Tests use
``LocalCluster`` directly (one cluster per test session).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
KWOK_STAGES = (
    "node/fast/node-initialize.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
    "volume/fast/pvc-provision.yaml",
    "volume/fast/pv-bind.yaml",
    "volume/fast/pvc-delete.yaml",
    "volume/fast/pv-delete.yaml",
)
GPU_RESOURCE = "nvidia.com/gpu"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"


class ClusterError(RuntimeError):
    """The control plane could not be built or started (the message says which part and why)."""


def build() -> Path:
    """The folder holding the five binaries (built on first use; cached by the pins' hash)."""
    proc = subprocess.run([str(HERE / "build.sh")], stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise ClusterError(f"tools/cluster/build.sh failed (exit {proc.returncode}); its output is above")
    return Path(proc.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d: Path) -> None:
    """CA, serving cert (127.0.0.1, localhost, the in-cluster names), admin client cert, SA key."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "30",
        "-subj",
        "/CN=arctic-serve-test-ca",
        cwd=d,
    )
    sans = "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes.default.svc"
    for name, subj, ext in (
        ("apiserver", "/CN=kube-apiserver", sans),
        ("admin", "/O=system:masters/CN=admin", "extendedKeyUsage=clientAuth"),
    ):
        _openssl(
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            subj,
            cwd=d,
        )
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "30",
            "-extfile",
            f"{name}.ext",
            cwd=d,
        )
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


def kubeconfig(server: str, certs: Path, user: dict[str, str]) -> str:
    """A kubeconfig (JSON is YAML) for ``server`` with ``user``'s credentials."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {"server": server, "certificate-authority": str(certs / "ca.crt")},
                }
            ],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "user"}}],
            "current-context": "local",
        },
        indent=1,
    )


def kwok_dir() -> Path:
    """kwok's module folder (its stage definitions live there)."""
    proc = subprocess.run(
        ["go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/kwok"],
        cwd=HERE / "kwok",
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ClusterError(f"cannot locate kwok's module: {proc.stderr.strip()}")
    return Path(proc.stdout.strip()) / "kustomize" / "stage"


def kwok_stages(out: Path) -> Path:
    """kwok's own "fast" stages (nodes Ready; pods Ready, completed, deleted; claims provisioned and
    bound by its default StorageClass ``kwok-volume``), read from its module, not copied."""
    stage_dir = kwok_dir()
    out.write_text("\n---\n".join((stage_dir / s).read_text() for s in KWOK_STAGES))
    return out


@dataclass
class LocalCluster:
    """The control plane's processes, state and logs under ``workdir``."""

    workdir: Path
    nodes: int = 2
    gpus: int = 8
    extra_apiserver_args: list[str] = field(default_factory=list)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    server: str = ""

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 (lives as long as the process)
        self.procs[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def _wait(self, what: str, ok: object, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-2000:]
                    raise ClusterError(
                        f"{name} exited with {proc.returncode} while waiting for {what}:\n{tail}"
                    )
            if callable(ok) and ok():
                return
            time.sleep(0.25)
        raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what} (logs in {self.workdir})")

    def _healthy(self, url: str, ctx: ssl.SSLContext | None = None) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2, context=ctx) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        kubectl = ROOT / ".venv" / "tools" / "bin" / "kubectl"
        proc = subprocess.run(
            [str(kubectl), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def start(self, timeout: float = 120.0) -> None:
        started = time.monotonic()
        bins = build()
        self.workdir.mkdir(parents=True, exist_ok=True)
        certs = self.workdir / "pki"
        make_certs(certs)
        etcd_client, etcd_peer, api_port = _free_port(), _free_port(), _free_port()
        self._spawn(
            "etcd",
            [
                str(bins / "etcd"),
                "--data-dir",
                str(self.workdir / "etcd"),
                "--listen-client-urls",
                f"http://127.0.0.1:{etcd_client}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{etcd_client}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{etcd_peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{etcd_peer}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync",
                "--quota-backend-bytes",
                str(2**31),
                "--log-level",
                "warn",
            ],
        )
        self._wait("etcd", lambda: self._healthy(f"http://127.0.0.1:{etcd_client}/health"), 30)
        self._spawn(
            "kube-apiserver",
            [
                str(bins / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_client}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # a loopback address cannot back the kubernetes Service's endpoints: none kept
                "--endpoint-reconciler-type=none",
                # new nodes get no not-ready taint: nobody would lift it (no node lifecycle controller,
                # since kwok's nodes send no heartbeats)
                "--disable-admission-plugins=TaintNodesByCondition",
                f"--secure-port={api_port}",
                f"--tls-cert-file={certs / 'apiserver.crt'}",
                f"--tls-private-key-file={certs / 'apiserver.key'}",
                f"--client-ca-file={certs / 'ca.crt'}",
                f"--service-account-key-file={certs / 'sa.pub'}",
                f"--service-account-signing-key-file={certs / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--allow-privileged=false",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--v=0",
            ],
        )
        self.server = f"https://127.0.0.1:{api_port}"
        ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        ctx.load_cert_chain(str(certs / "admin.crt"), str(certs / "admin.key"))
        self._wait("kube-apiserver /readyz", lambda: self._healthy(f"{self.server}/readyz", ctx), timeout)
        admin = {"client-certificate": str(certs / "admin.crt"), "client-key": str(certs / "admin.key")}
        self.kubeconfig.write_text(kubeconfig(self.server, certs, admin))
        kc = f"--kubeconfig={self.kubeconfig}"
        self._spawn(
            "kube-controller-manager",
            [
                str(bins / "kube-controller-manager"),
                kc,
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={_free_port()}",
                "--controllers=*,-node-lifecycle-controller",
                f"--service-account-private-key-file={certs / 'sa.key'}",
                f"--root-ca-file={certs / 'ca.crt'}",
                "--use-service-account-credentials=false",
                "--concurrent-gc-syncs=5",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(bins / "kube-scheduler"),
                kc,
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={_free_port()}",
            ],
        )
        stages = kwok_stages(self.workdir / "kwok-stages.yaml")
        self._spawn(
            "kwok",
            [
                str(bins / "kwok"),
                kc,
                f"--config={stages}",
                f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
                "--cidr=10.244.0.0/16",
                "--node-ip=10.0.0.1",
                f"--server-address=127.0.0.1:{_free_port()}",
            ],
        )
        self.add_nodes()
        self.kubectl("apply", "-f", str(kwok_dir() / "volume" / "fast" / "storage-class.yaml"))
        # the default ServiceAccount exists once the controller manager runs: pods can be created
        self._wait(
            "the default ServiceAccount",
            lambda: self.kubectl("get", "sa", "default", "-n", "default", check=False) != "",
            timeout,
        )
        self._wait(
            "kwok nodes Ready",
            lambda: (
                self.kubectl(
                    "get",
                    "nodes",
                    "-o",
                    "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}",
                    check=False,
                ).split()
                == ["True"] * self.nodes
            ),
            timeout,
        )
        (self.workdir / "pids").write_text(" ".join(str(p.pid) for p in self.procs.values()))
        print(
            f"cluster: up in {time.monotonic() - started:.1f} s at {self.server}; "
            f"KUBECONFIG={self.kubeconfig}",
            file=sys.stderr,
        )

    def add_nodes(self) -> None:
        nodes = [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": f"gpu-node-{i}",
                    "annotations": {KWOK_ANNOTATION: "fake"},
                    "labels": {
                        "kubernetes.io/hostname": f"gpu-node-{i}",
                        "type": "kwok",
                        # the labels NVIDIA's GPU feature discovery puts on an H100 node
                        "nvidia.com/gpu.present": "true",
                        "nvidia.com/gpu.count": str(self.gpus),
                        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                    },
                },
                "status": {
                    "allocatable": {
                        "cpu": "64",
                        "memory": "512Gi",
                        "pods": "110",
                        GPU_RESOURCE: str(self.gpus),
                    },
                    "capacity": {"cpu": "64", "memory": "512Gi", "pods": "110", GPU_RESOURCE: str(self.gpus)},
                },
            }
            for i in range(self.nodes)
        ]
        self.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes})
        )

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()


def down(workdir: Path) -> None:
    pids = workdir / "pids"
    if not pids.exists():
        print(f"cluster: nothing running under {workdir}", file=sys.stderr)
        return
    for pid in reversed(pids.read_text().split()):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(pid), signal.SIGTERM)
    pids.unlink()
    shutil.rmtree(workdir / "etcd", ignore_errors=True)
    print("cluster: stopped", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("action", choices=["up", "down", "build"])
    parser.add_argument("--dir", type=Path, default=ROOT / ".cluster")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--gpus", type=int, default=8)
    args = parser.parse_args(argv)
    try:
        if args.action == "build":
            print(build())
        elif args.action == "down":
            down(args.dir)
        else:
            down(args.dir) if (args.dir / "pids").exists() else None
            shutil.rmtree(args.dir, ignore_errors=True)
            LocalCluster(args.dir, nodes=args.nodes, gpus=args.gpus).start()
            print(f"export KUBECONFIG={args.dir / 'kubeconfig'}")
    except ClusterError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
