"""The operator at scale on the real control plane (``tools/cluster``): N ArcticInferenceServices.

``python -m bench.operator_scale --services 1000`` starts the control plane (kwok CPU nodes enough
for N one-replica CPU services), installs the chart, runs the operator as a local process with the
chart's ServiceAccount token, applies N copies of the CPU sample and measures:

- time from the first apply to all N Ready;
- reconcile latency p50/p99 (the operator's ``arctic_operator_reconcile_seconds`` histogram,
  interpolated inside its buckets), the passes over 1 s, and the same for the first passes alone
  (``arctic_operator_first_reconcile_seconds``: each resource's first, which creates its children);
- the operator's peak RSS (``/proc/<pid>/status`` VmHWM);
- API requests per reconcile: the API server's audit log (only the operator's ServiceAccount is
  logged) divided by the reconcile count.

Targets (issue 15): p99 reconcile < 1 s, RSS < 150 MB. Results: ``bench/results/operator-scale-<time>.json``.
A benchmark, not a test: run it by hand, on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  users: ["system:serviceaccount:arctic-system:arctic-serve-operator"]
- level: None
"""


def _metric(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out.append((dict(sample.labels), float(sample.value)))
    return out


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """The q-quantile from cumulative (upper bound, count) buckets, linear inside a bucket."""
    total = buckets[-1][1]
    rank = q * total
    low_bound, low_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return low_bound
            span = count - low_count
            return low_bound + (bound - low_bound) * ((rank - low_count) / span if span else 0.0)
        low_bound, low_count = bound, count
    return low_bound


def over(buckets: list[tuple[float, float]], bound: float) -> float:
    """How many observations of cumulative (upper bound, count) buckets exceed ``bound`` (a bucket
    bound)."""
    total = buckets[-1][1]
    at = next((count for upper, count in buckets if upper == bound), None)
    if at is None:
        raise ValueError(f"{bound:g} is not a bucket bound (bounds: {[b for b, _ in buckets]})")
    return total - at


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_seconds(stat: str, ticks: int) -> float:
    """A process's CPU time (user + system) from its ``/proc/<pid>/stat`` line, ``ticks`` a second."""
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces and parentheses
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime: fields 14 and 15 of stat


def busy_seconds(stat: str, ticks: int) -> float:
    """The machine's busy CPU time from ``/proc/stat``: user, nice, system, irq and softirq (not idle,
    iowait, the hypervisor's steal, nor guest time, which user already counts)."""
    first = stat.splitlines()[0].split()
    assert first[0] == "cpu", first
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in first[1:8])
    return (user + nice + system + irq + softirq) / ticks


def _cpu_of(pid: int) -> float:
    return cpu_seconds(Path(f"/proc/{pid}/stat").read_text(), os.sysconf("SC_CLK_TCK"))


@dataclass(frozen=True)
class Sent:
    """One of the operator's requests about one resource's children, from the audit log."""

    received: float
    completed: float
    verb: str
    resource: str
    dry_run: bool

    @property
    def write(self) -> bool:
        return self.verb in ("create", "patch", "update") and not self.dry_run

    @property
    def read(self) -> bool:
        return self.verb in ("get", "list")


def first_pass_rounds(sent: list[Sent]) -> dict[str, Any] | None:
    """A resource's first pass as the API server saw it, from the requests about its children (its
    own object and its status left out): round 1, every request received before the first write
    (the reads and the dry runs); round 2, the writes from there to the next read (the next
    pass). Seconds: ``total`` (round 1's first request received to round 2's last answer),
    ``round1``, ``between`` (round 1's last answer to round 2's first request: the operator's own
    time) and ``round2``; ``slowest_write``: the resource of round 2's slowest request. None when
    the resource has no write."""
    ordered = sorted(sent, key=lambda r: r.received)
    first = next((i for i, r in enumerate(ordered) if r.write), None)
    if first is None or first == 0:
        return None
    round1 = ordered[:first]
    round2 = []
    for r in ordered[first:]:
        if r.read:
            break
        if r.write:
            round2.append(r)
    end1 = max(r.completed for r in round1)
    return {
        "total": max(r.completed for r in round2) - round1[0].received,
        "round1": end1 - round1[0].received,
        "between": round2[0].received - end1,
        "round2": max(r.completed for r in round2) - round2[0].received,
        "slowest_write": max(round2, key=lambda r: r.completed - r.received).resource,
    }


def owner_of(entry: dict[str, Any], names: list[str]) -> str | None:
    """Which of the resources ``names`` an audit entry of a child request is about: the one whose
    name the object's name starts with (``svc-0001-admin``), or the listing's selector names
    (``app.kubernetes.io/instance=svc-0001``); None for the resources themselves and events."""
    from urllib.parse import parse_qs, urlsplit

    ref = entry.get("objectRef") or {}
    if ref.get("resource") in (None, "arcticinferenceservices", "events"):
        return None
    name = ref.get("name")
    if not name:
        query = parse_qs(urlsplit(entry.get("requestURI", "")).query)
        pairs = dict(p.split("=", 1) for p in ",".join(query.get("labelSelector", [])).split(",") if "=" in p)
        name = pairs.get("app.kubernetes.io/instance")
    if not name:
        return None
    return max((n for n in names if name == n or name.startswith(n + "-")), key=len, default=None)


def _code_version() -> str:
    """The commit the operator ran from (``+dirty`` with uncommitted changes), for comparisons."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout

    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no").strip() else "")


def main(argv: list[str] | None = None) -> int:
    from tests.cluster.conftest import APPS_NS, Kube, OperatorProcess
    from tools.cluster.cluster import LocalCluster

    from arctic_operator.settings import OperatorSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (audit log, logs)")
    parser.add_argument(
        "--resync-s",
        type=float,
        default=OperatorSettings.resync_seconds,
        help="the operator's resync interval (default: the operator's and the chart's, "
        f"{OperatorSettings.resync_seconds:g} s; the cluster tests use {OperatorProcess.RESYNC_SECONDS} s)",
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="operator-scale-"))
    policy = work / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
    audit = work / "audit.log"
    nodes = max(1, -(-args.services // 100))
    cluster = LocalCluster(
        work / "cluster",
        nodes=nodes,
        gpus=8,
        extra_apiserver_args=[f"--audit-policy-file={policy}", f"--audit-log-path={audit}"],
    )
    op: OperatorProcess | None = None
    try:
        cluster.start()  # inside: a start that fails half-way stops what it started
        kube = Kube(cluster)
        kube.helm(
            "install",
            "arctic-serve",
            str(ROOT / "charts" / "arctic-serve"),
            "-n",
            "arctic-system",
            "--create-namespace",
            "--set",
            "operator.replicas=0",
        )
        kube.kubectl("create", "namespace", APPS_NS)
        op = OperatorProcess(
            kube, work, metrics_port=True, env={"ARCTIC_OPERATOR_RESYNC_SECONDS": f"{args.resync_s:g}"}
        )
        op.start()
        sample = yaml.safe_load((ROOT / "docs" / "samples" / "smollm2-cpu.yaml").read_text())
        sample["spec"]["resources"] = {"requests": {"cpu": "100m", "memory": "1Gi"}}
        items = []
        for i in range(args.services):
            doc = json.loads(json.dumps(sample))
            doc["metadata"] = {"name": f"svc-{i:04d}", "namespace": APPS_NS}
            items.append(doc)
        started = time.monotonic()
        machine_busy = busy_seconds(Path("/proc/stat").read_text(), os.sysconf("SC_CLK_TCK"))
        load_before = os.getloadavg()[0]
        assert op.proc is not None
        pids = {name: proc.pid for name, proc in cluster.procs.items()} | {"operator": op.proc.pid}
        cpu_before = {name: _cpu_of(pid) for name, pid in pids.items()}
        tools_before = os.times()
        # 50 a call: kubectl's client-side apply is two requests per object, one after another, and
        # a call of 200 ran past kubectl's 120 s limit on a busy machine (the API server creating
        # the first ones' children meanwhile)
        for chunk in range(0, len(items), 50):
            kube.apply({"apiVersion": "v1", "kind": "List", "items": items[chunk : chunk + 50]})
        ready = 0
        loads = [load_before]  # the 1-minute load average at each poll, to all Ready
        while time.monotonic() - started < args.timeout:
            loads.append(os.getloadavg()[0])
            listing = json.loads(kube.kubectl("get", "ais", "-n", APPS_NS, "-o", "json").stdout)["items"]
            ready = sum(
                any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in (o.get("status") or {}).get("conditions") or []
                )
                for o in listing
            )
            if ready == args.services:
                break
            time.sleep(2.0)
        all_ready_s = time.monotonic() - started
        # CPU time from the first apply to all Ready, per process and for the whole machine (other
        # users of a shared machine are the rest)
        cpu = {name: round(_cpu_of(pid) - cpu_before[name], 1) for name, pid in pids.items()}
        tools = os.times()  # this process (the polling) and its finished children (kubectl calls)
        cpu["benchmark (kubectl apply, polling)"] = round(
            tools.user
            + tools.system
            + tools.children_user
            + tools.children_system
            - (tools_before.user + tools_before.system)
            - (tools_before.children_user + tools_before.children_system),
            1,
        )
        machine_busy = busy_seconds(Path("/proc/stat").read_text(), os.sysconf("SC_CLK_TCK")) - machine_busy
        load_after = os.getloadavg()[0]
        metrics = op.metrics()
        buckets = sorted(
            (float(lbl["le"]), v) for lbl, v in _metric(metrics, "arctic_operator_reconcile_seconds_bucket")
        )
        first_buckets = sorted(
            (float(lbl["le"]), v)
            for lbl, v in _metric(metrics, "arctic_operator_first_reconcile_seconds_bucket")
        )
        reconciles = sum(v for _, v in _metric(metrics, "arctic_operator_reconciles_total"))
        requests, by_verb = 0, Counter[str]()
        server_s: dict[str, list[float]] = {}
        names = [item["metadata"]["name"] for item in items]
        children: dict[str, list[Sent]] = {}
        # the API server rotates its audit log every 100 MB (audit-<time>.log beside it): read all
        for part in sorted(work.glob("audit*.log")):
            for line in part.open():
                requests += 1
                entry = json.loads(line)
                ref = entry.get("objectRef") or {}
                what = "/".join(p for p in (ref.get("resource"), ref.get("subresource")) if p)
                dry = "dryRun=All" in entry.get("requestURI", "")
                key = f"{entry.get('verb')}{' (dry run)' if dry else ''} {what}"
                by_verb[key] += 1
                if entry.get("stage") == "ResponseComplete" and entry.get("requestReceivedTimestamp"):
                    took = _stamp(entry["stageTimestamp"]) - _stamp(entry["requestReceivedTimestamp"])
                    server_s.setdefault(key, []).append(took)
                    owner = owner_of(entry, names)
                    if owner is not None:
                        children.setdefault(owner, []).append(
                            Sent(
                                _stamp(entry["requestReceivedTimestamp"]),
                                _stamp(entry["stageTimestamp"]),
                                str(entry.get("verb")),
                                what,
                                dry,
                            )
                        )
        passes = [r for r in (first_pass_rounds(v) for v in children.values()) if r is not None]
        rss_kb = op.peak_rss_kb()
        process_env = dict(op.process_env)
        op.stop()
    finally:
        if op is not None:
            op.stop()  # also when the run fails: no operator left running
        cluster.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)  # etcd's data and the audit log: ~150 MB per 100
    result: dict[str, Any] = {
        "suite": "operator-scale",
        "time": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        "command": "python -m bench.operator_scale " + " ".join(argv if argv is not None else sys.argv[1:]),
        "environment": {
            "machine": platform.node(),
            "cpus": os.cpu_count(),
            "kubernetes": "1.37.2 (kwok nodes)",
            # 1-minute load average at the first apply and at all Ready
            "load": [round(load_before, 2), round(load_after, 2)],
            # ... and over the run (every poll, ~2 s): min, mean, max
            "load_during": [round(min(loads), 2), round(sum(loads) / len(loads), 2), round(max(loads), 2)],
        },
        "code": _code_version(),
        "services": args.services,
        "ready": ready,
        "all_ready_s": round(all_ready_s, 1),
        "reconciles": reconciles,
        "reconcile_p50_s": round(quantile(buckets, 0.5), 4) if buckets else None,
        "reconcile_p99_s": round(quantile(buckets, 0.99), 4) if buckets else None,
        "reconciles_over_1s": over(buckets, 1.0) if buckets else None,
        # each resource's first pass (it creates the children): the tail of the histogram above
        "first_reconciles": first_buckets[-1][1] if first_buckets else None,
        "first_reconcile_p50_s": round(quantile(first_buckets, 0.5), 4) if first_buckets else None,
        "first_reconcile_p99_s": round(quantile(first_buckets, 0.99), 4) if first_buckets else None,
        "first_reconciles_over_1s": over(first_buckets, 1.0) if first_buckets else None,
        # the histogram itself, cumulative (upper bound, count): to recompute in other buckets
        "reconcile_buckets": [
            [bound if bound != float("inf") else "+Inf", count] for bound, count in buckets
        ],
        "operator_peak_rss_mb": round(rss_kb / 1024, 1),
        # CPU-seconds per process of the benchmark, and the machine's busy CPU-seconds from the first
        # apply to all Ready (beside all_ready_s x cpus: how saturated the machine was)
        "cpu_seconds": cpu,
        "machine_busy_cpu_seconds": round(machine_busy, 1),
        # the rest of the machine's busy time: other users of a shared machine (what inflates p99)
        "other_cpu_seconds": round(machine_busy - sum(cpu.values()), 1),
        # the environment the chart's Deployment gives the operator's process (OperatorProcess)
        "operator_process_env": process_env,
        "api_requests": requests,
        "api_requests_per_reconcile": round(requests / reconciles, 2) if reconciles else None,
        "api_requests_by_verb": dict(by_verb.most_common()),
        # the API server's own time per request (audit: received -> response complete), p50/p99
        "api_server_seconds_by_verb": {
            key: [round(_rank(v, 0.5), 4), round(_rank(v, 0.99), 4)]
            for key, v in sorted(server_s.items(), key=lambda kv: -len(kv[1]))
            if len(v) >= 100
        },
        # each resource's first pass as the API server saw it (first_pass_rounds), p50/p90/p99 per
        # part, and which request was the slowest of its writes (how often)
        "first_pass_server_seconds": {
            part: [round(_rank([p[part] for p in passes], q), 4) for q in (0.5, 0.9, 0.99)]
            for part in ("total", "round1", "between", "round2")
        }
        if passes
        else None,
        "first_pass_slowest_write": dict(Counter(p["slowest_write"] for p in passes).most_common()),
        "operator_resync_s": args.resync_s,
        "targets": {"reconcile_p99_s": 1.0, "operator_rss_mb": 150},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"operator-scale-{result['time']}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print(f"wrote {path}", file=sys.stderr)
    return 0 if ready == args.services else 1


if __name__ == "__main__":
    sys.exit(main())
