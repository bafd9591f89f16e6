"""Kubernetes backend benchmark: `.venv/bin/python bench/kubernetes_watch.py [--quick] [--jobs N] [--rate R]`.

One run on the emulated cluster (testkit/kube: the API server over HTTP and
the test kubelet), with the engine on the kubernetes backend and the
operator-service in this process, on a fresh PostgreSQL database:

- jobs are created through the operator-service at a steady rate, so that the
  pods' status changes (every kubelet patch of a job's three pods) come at
  about `--rate` changes/s (default 50);
- the pods run trivial programs: the configure and publish pods report to
  JobAgentService with grpcurl (a static binary: no interpreter start-up on
  the job's clock), the algorithm pod exits 0 at once (a kubelet scenario);
- pod_to_applied: from the kubelet's patch that ends an algorithm pod to the
  operator-service's commit of the state change that follows (60, publishing),
  p50/p99; the baseline beside it is the same span measured to the engine's
  own emit of that change (what the operator-service adds is the rest);
- api_calls_per_job: the engine's calls to the API server (User-Agent
  c2d-operator-engine) after its start-up, per job, by kind; and the list
  calls made in steady state (no polling: 0);
- jobs/s from the first CreateJob to the last job at 70.

Prints a table and, as its last line, one JSON object. Not a test: figures to
report (targets: p99 <= 100 ms at 50 pod changes/s, <= 12 calls per job,
0 lists in steady state).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.control_plane import AppliedClock, percentile, wait_count
from plumbing import auth
from services.operator_engine import server as engine_server
from services.operator_engine.backends.kubernetes.wiring import USER_AGENT
from services.operator_engine.settings import EngineSettings
from services.operator_service import server as operator_server
from testkit import kube
from testkit.control_plane import Operator, create_request, operator_settings, query, wait_available
from testkit.kube import containers, kubelet, manifests
from testkit.stacks import fresh_postgres_database

POD_CHANGES_PER_JOB = 9  # each pod: Pending (ContainerCreating), Running, Succeeded
GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or "grpcurl"
AGENT = "c2d.engine.v1.JobAgentService"


def trivial_pod(method: str, body: str) -> list[str]:
    """A pod program that makes one JobAgentService call with the job's token file."""
    script = (
        f'exec {GRPCURL} -plaintext -H "authorization: Bearer $(cat "$C2D_JOB_TOKEN_FILE")" '
        f"-d '{body}' \"$C2D_AGENT_ADDRESS\" {AGENT}/{method} >/dev/null"
    )
    return ["/bin/sh", "-c", script]


class EndClock:
    """When the kubelet patched each algorithm pod to its end (instrumentation of the test kubelet)."""

    def __init__(self) -> None:
        self.ended: dict[str, float] = {}
        self._original = kubelet.PodWorker._patch

    def __enter__(self) -> EndClock:
        original, ended = self._original, self.ended

        def patch(worker, status):  # type: ignore[no-untyped-def]
            original(worker, status)
            if worker.name.endswith("-algorithm") and status.get("phase") in ("Succeeded", "Failed"):
                ended[worker.pod["metadata"]["annotations"]["c2d.dev/job-id"]] = time.time()

        kubelet.PodWorker._patch = patch  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        kubelet.PodWorker._patch = self._original  # type: ignore[method-assign]


async def run(jobs: int, rate: float) -> dict[str, float]:
    # The job id is only known in the pod's environment: grpcurl's JSON gets it through the shell.
    containers.IMAGE_ENTRYPOINTS["bench-config"] = trivial_pod(
        "ReportProgress", '{"job_id": "\'"$C2D_JOB_ID"\'", "status": 30}'
    )
    containers.IMAGE_ENTRYPOINTS["bench-publish"] = trivial_pod(
        "ReportResults", '{"job_id": "\'"$C2D_JOB_ID"\'", "results": {"storage": "none"}}'
    )
    root = Path(tempfile.mkdtemp(prefix="c2d-bench-k8s-"))
    os.environ.setdefault("C2D_DATA_DIR", str(root / "data"))
    with (
        fresh_postgres_database("c2d_bench") as url,
        kube.ApiServer() as api,
        kube.Kubelet(api, root / "node", cpu="64", memory="256Gi") as node,
        AppliedClock() as applied,
        EndClock() as ended,
    ):
        api.apply(manifests.load(manifests.DEPLOY_BASE / "engine-rbac.yaml"))
        token = api.token_for("c2d", "c2d-operator-engine")
        node.plan(kube.Exit(0), labels={"c2d.dev/stage": "algorithm"})
        settings = EngineSettings(
            address="127.0.0.1:0",
            metrics_address="",
            database_url=url,
            workspaces_dir=str(root / "ws"),
            heartbeat_s=0.2,
            max_jobs=1000,
            backend="kubernetes",
            k8s_kubeconfig=str(api.write_kubeconfig(root / "kubeconfig", token)),
            k8s_storage_class="standard",
            k8s_pod_config_image="bench-config:dev",
            k8s_pod_publish_image="bench-publish:dev",
        )
        engine = await engine_server.start(settings)
        operator_running = await operator_server.start(operator_settings(url, engine.port))
        operator = Operator(operator_running.port)
        try:
            await wait_available(operator)
            mark = api.mark()
            interval = POD_CHANGES_PER_JOB / rate
            started = time.monotonic()
            first = time.time()
            for index in range(jobs):
                await asyncio.sleep(max(0.0, started + index * interval - time.monotonic()))
                await operator.create(create_request())
            await wait_count(url, "SELECT count(*) FROM jobs WHERE status = 70", jobs, timeout=900)
            elapsed = time.time() - first
            await asyncio.sleep(1.0)  # the last jobs' clean-up
            calls = api.calls(mark, user_agent=USER_AGENT)
            emitted = await asyncio.to_thread(
                query,
                url,
                "SELECT job_id, sequence, extract(epoch from time) FROM job_events WHERE status = 60",
            )
        finally:
            await operator.close()
            await operator_running.stop(1)
            await engine.stop(1)
    shutil.rmtree(root, ignore_errors=True)
    to_applied, to_emitted = [], []
    for job_id, sequence, emitted_at in emitted:
        if job_id in ended.ended:
            to_applied.append((applied.applied_at(job_id, sequence) - ended.ended[job_id]) * 1000)
            to_emitted.append((float(emitted_at) - ended.ended[job_id]) * 1000)
    by_kind = collections.Counter((call.verb, call.resource) for call in calls)
    counted = sum(n for (verb, _), n in by_kind.items() if verb in ("create", "delete", "list", "watch"))
    return {
        "jobs": jobs,
        "pod_changes_per_s": round(jobs * POD_CHANGES_PER_JOB / elapsed, 1),
        "pod_to_applied_p50_ms": round(percentile(to_applied, 50), 1),
        "pod_to_applied_p99_ms": round(percentile(to_applied, 99), 1),
        "pod_to_engine_emit_p50_ms": round(percentile(to_emitted, 50), 1),
        "pod_to_engine_emit_p99_ms": round(percentile(to_emitted, 99), 1),
        "api_calls_per_job": round(counted / jobs, 2),
        "api_calls_per_job_all": round(len(calls) / jobs, 2),
        "status_patches_per_job": round(by_kind["patch", "computejobs/status"] / jobs, 2),
        "log_reads_per_job": round(by_kind["get", "pods/log"] / jobs, 2),
        "steady_state_lists": by_kind["list", "pods"],
        "watches": by_kind["watch", "pods"],
        "jobs_per_s": round(jobs / elapsed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, help="default 60; 10 with --quick")
    parser.add_argument("--rate", type=float, default=50.0, help="pod status changes per second")
    parser.add_argument("--quick", action="store_true", help="10 jobs, for a smoke test")
    args = parser.parse_args()
    os.environ.setdefault("C2D_SERVICE_TOKEN", auth.service_token())
    jobs = args.jobs or (10 if args.quick else 60)
    figures = asyncio.run(run(jobs, args.rate))
    targets = {
        "pod_to_applied_p99_ms": "<= 100",
        "api_calls_per_job": "<= 12",
        "steady_state_lists": "0",
    }
    print(f"{'measure':<28} {'value':>10}  target")
    for name, value in figures.items():
        print(f"{name:<28} {value:>10}  {targets.get(name, '')}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
