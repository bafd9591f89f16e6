"""The local backend: each stage a process on this machine.

pod_config and pod_publish run as ordinary processes (our own code, but
parsing untrusted data: on a root engine as the job's unprivileged uid, with
the job's workspace and nothing else of the engine's), forked from a
pre-imported helper by default (`pod_launcher.py`); the algorithm (a stranger's code) runs in the bubblewrap
sandbox of `sandbox.py` with the environment's limits. Each process gets its
own session so a stop or timeout kills its whole tree. The algorithm DDO's
container image maps to an interpreter of this host, seen read-only inside
the sandbox (the table is in `runtimes.py`); a container this host cannot run,
or a missing bubblewrap, is refused at submit time.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from plumbing import errors, job_files, settings, storage
from services.operator_engine.backends.local import cgroups, runtimes, sandbox
from services.operator_engine.backends.local.monitor import Monitored, MonitorFailed, MonitorLauncher
from services.operator_engine.backends.local.pod_launcher import Launcher, PodAccess, SubprocessLauncher
from services.operator_engine.domain.jobs import ALGORITHM_LOG, Capacity, JobSpec, StageExit
from services.operator_engine.domain.stages import Stage

# The algorithm's view of its workspace (DESIGN.md: inside a job).
ALGORITHM_DATA = "/data"
MAX_PROCESSES = 256


class LocalBackend:
    name = "local"

    def __init__(
        self,
        agent_address: str,
        pod_environment: Mapping[str, str],
        use_sandbox: bool,
        launcher: Launcher | None = None,
        capabilities: sandbox.SandboxCapabilities | None = None,  # default: what this host has
    ) -> None:
        self.agent_address = agent_address
        self._pod_environment = dict(pod_environment)
        self.sandboxed = use_sandbox
        self._capabilities = capabilities or sandbox.detect_capabilities()
        self._launcher = launcher or SubprocessLauncher()
        # A root engine runs the pods (our code, parsing untrusted data) as the job's own uid,
        # as it does the algorithm, which leaves the outputs pod_publish reads owned by it.
        self._pods_drop = use_sandbox and sandbox._drops_privileges()
        config = storage.StorageConfig.from_env(self._pod_environment)
        self._results_root = (
            (config.local_root or Path(self._pod_environment.get("C2D_DATA_DIR") or settings.data_dir()) / "results")
            if config.kind == "local"
            else None
        )
        self._releasing: set[asyncio.Task[None]] = set()  # finished runs' cgroup removal
        self._detached = False  # the engine is stopping: algorithms go on under their monitors
        self._monitors = MonitorLauncher()

    async def close(self) -> None:
        await asyncio.gather(*self._releasing, return_exceptions=True)
        await self._launcher.close()
        await asyncio.to_thread(self._monitors.close)

    def describe(self) -> str:
        if not self.sandboxed:
            return "local processes WITHOUT a sandbox (explicitly configured; never for untrusted code)"
        pods = (
            "pods as the job's own uid"
            if self._pods_drop
            else f"pods as the engine's uid {os.geteuid()} (not root: nothing to drop)"
        )
        return f"local bubblewrap sandbox; {self._capabilities.describe()}; {pods}"

    def validate(self, entrypoint: str, image: str, allow_network: bool, tag: str = "", checksum: str = "") -> None:
        if self.sandboxed and not self._capabilities.bwrap:
            raise errors.FailedPrecondition(
                f"this engine cannot sandbox algorithms ({self._capabilities.problem or 'bubblewrap unavailable'}), "
                "so it refuses to run them: install bubblewrap, or run only trusted code in an environment "
                "configured without a sandbox (C2D_ENGINE_SANDBOX=false)",
                "sandbox_unavailable",
            )
        if self.sandboxed and allow_network and self._capabilities.network_problem:
            raise errors.FailedPrecondition(
                "this engine cannot give a job a network of its own "
                f"({self._capabilities.network_problem}), so it refuses jobs that ask for network access: "
                "install slirp4netns and nftables, or run the job without network access",
                "network_unavailable",
            )
        try:
            runtimes.resolve({"entrypoint": entrypoint, "image": image})
        except runtimes.RuntimeMissing as exc:
            raise errors.FailedPrecondition(str(exc), "runtime_missing") from None
        except runtimes.ContainerRefused as exc:
            raise errors.InvalidArgument(
                f"the algorithm's container cannot run here: {exc}",
                "container_invalid",
                field=f"workflow.container.{exc.part}",
            ) from None

    def detach(self) -> None:
        self._detached = True

    async def abandon(self, job: JobSpec) -> None:
        left = Monitored.find(_monitor_state(job))
        if left is not None:
            try:
                await left.stop()
            except MonitorFailed:
                pass  # it is gone either way

    def reclaim(self, job: JobSpec) -> None:
        # Only this job's cgroups: other engines on the host may be creating theirs.
        cgroups.sweep_empty(cgroups.detect(), prefix=cgroups.cgroup_name(job.job_id))

    def outlived_restart(self, job: JobSpec, stage: Stage) -> bool:
        # an algorithm runs under its monitor, which outlives the engine; pods die with it
        return stage.is_algorithm and Monitored.find(_monitor_state(job)) is not None

    async def prepare(self, job: JobSpec) -> None:
        await asyncio.to_thread(_fresh_workspace, job)  # file system calls stay off the event loop

    async def run_pod(self, stage: Stage, job: JobSpec) -> StageExit:
        env = {
            **self._pod_environment,
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "C2D_JOB_ID": job.job_id,
            "C2D_JOB_TOKEN": job.token,
            "C2D_AGENT_ADDRESS": self.agent_address,
            # relative to the pod's working directory, the workspace (PodAccess)
            "C2D_DATA_ROOT": str(job.data_root.relative_to(job.workspace)),
            "C2D_ADMIN_DIR": str(job.admin_dir.relative_to(job.workspace)),
            "TRACEPARENT": job.trace_parent,  # the pod joins the job's trace (plumbing/pods.py)
        }
        uid = sandbox.host_uid(job.job_id) if self._pods_drop else None
        results = self._results_root if stage.reports_results and uid is not None else None
        if uid is not None:
            _grant(job, uid, results)
        access = PodAccess(uid, job.workspace, results)
        try:
            # The admin log of the stage (configure.log, publish.log): the operator's, not a result.
            process = await self._launcher.start(stage.program, env, job.admin_dir / f"{stage.name}.log", access)
            try:
                ended = await asyncio.wait_for(process.wait(), stage.timeout_for(job))
            except TimeoutError:
                await process.kill()
                return StageExit(None, timed_out=True)
            except asyncio.CancelledError:
                await process.kill()
                raise
            return StageExit(ended.returncode, detail=ended.detail)
        finally:
            if results is not None:
                _take_back(results / job.job_id)

    async def run_algorithm(self, job: JobSpec, capacity: Capacity) -> StageExit:
        argv = runtimes.resolve_command({"entrypoint": job.entrypoint, "image": job.image})
        root = ALGORITHM_DATA if self.sandboxed else str(job.data_root)
        env = {
            "DIDS": json.dumps([did.removeprefix("did:op:") for did in job.dataset_dids]),
            "TRANSFORMATION_DID": job.algorithm_did.removeprefix("did:op:"),
            "VOLUME": root,
            "INPUTS": f"{root}/inputs",
            "OUTPUTS": f"{root}/outputs",
            "LOGS": f"{root}/logs",
        }
        if not self.sandboxed:
            argv = tuple(a.replace(ALGORITHM_DATA, root, 1) if a.startswith(ALGORITHM_DATA) else a for a in argv)
        spec = sandbox.SandboxSpec(
            job_id=job.job_id,
            workspace=job.data_root,
            argv=argv,
            env=env,
            allow_network=job.allow_network,
            limits=sandbox.SandboxLimits(
                wall_timeout_s=job.algorithm_timeout_s,
                memory_bytes=capacity.memory_bytes,
                cpu_cores=capacity.cpu_cores,
                max_processes=MAX_PROCESSES,
                # One byte over the quota: a single file that reaches this limit is
                # over quota too, so it ends as 42 (quota), not as a write error.
                max_file_bytes=capacity.disk_bytes + 1,
                disk_quota_bytes=capacity.disk_bytes,
                log_max_bytes=capacity.log_max_bytes,
            ),
            use_sandbox=self.sandboxed,
            log_path=job.workspace / ALGORITHM_LOG,
        )
        # A run a previous engine process started goes on under its monitor: attach to it.
        run = Monitored.find(_monitor_state(job)) or self._monitors.start(spec, _monitor_state(job))
        try:
            outcome = await run.outcome()
        except asyncio.CancelledError:
            if not self._detached:
                await asyncio.shield(run.stop())
            raise
        # Its cgroups are removed while the job moves on to publishing; close() waits for that.
        releasing = asyncio.create_task(run.reap(), name=f"release-{job.job_id}")
        self._releasing.add(releasing)
        releasing.add_done_callback(self._releasing.discard)
        return StageExit(
            exit_code=outcome.exit_code,
            timed_out=outcome.timed_out,
            detail=outcome.describe(),
            signal=outcome.signal,
            oom_killed=outcome.oom_killed,
            stopped=outcome.stopped,
            disk_quota_exceeded=outcome.disk_quota_exceeded,
            duration_s=outcome.duration_s,
        )

    def release(self, job: JobSpec) -> None:
        return None  # nothing outlives its stage here

    async def remove(self, job_id: str, workspace: Path) -> None:
        await asyncio.to_thread(shutil.rmtree, workspace, ignore_errors=True)


def _monitor_state(job: JobSpec) -> Path:
    return job.admin_dir / "monitor"


def _grant(job: JobSpec, uid: int, results_root: Path | None) -> None:
    """What a pod running as the job's `uid` writes: the job's data/ (the engine's
    workspace, admin/ and algorithm.log stay root's, readable), and with `results_root`
    the job's own directory in local results storage, in a root that lists nothing."""
    os.chown(job.data_root, uid, uid, follow_symlinks=False)
    if results_root is None:
        return
    results_root.mkdir(parents=True, exist_ok=True)
    os.chmod(results_root, 0o711)  # other jobs' directories are not listed
    mine = results_root / job.job_id
    mine.mkdir(mode=0o700, exist_ok=True)
    # the unprivileged reader (job_files) serves what it publishes, from the moment it is reported
    os.chown(mine, uid, job_files.READER_ID, follow_symlinks=False)
    os.chmod(mine, 0o750, follow_symlinks=False)


def _take_back(mine: Path) -> None:
    """After the stage: the job's results directory is root's again, open only to the
    unprivileged reader that serves results (job_files), so the job's uid (or one that collides
    with it) reaches nothing under it."""
    try:
        os.chown(mine, 0, job_files.READER_ID, follow_symlinks=False)
        os.chmod(mine, 0o750, follow_symlinks=False)
    except FileNotFoundError:
        pass


def _fresh_workspace(job: JobSpec) -> None:
    if job.workspace.exists():
        shutil.rmtree(job.workspace)  # a retried configure starts clean
    job.admin_dir.mkdir(parents=True)
    job.data_root.mkdir()
