"""The kubernetes backend: each job a ComputeJob owning a volume, a Secret, a
NetworkPolicy and three pods (objects.py), driven by one pod watch (watch.py).

prepare() (the configure stage, which starts clean) creates the ComputeJob
and what it owns; run_pod() and run_algorithm() create a stage's pod and wait
for the watch to say how it ended (outcomes.py); a stop deletes the pod.
When the job ends, release() writes its last status to the ComputeJob and
deletes it: the owner-reference cascade removes its pods, claim, Secret and
policy. Results are untouched (pod_publish stored them). The engine's state
changes are mirrored to the ComputeJob's status subresource (`mirror`),
coalesced, so `kubectl get computejobs -w` follows the jobs.

The official client blocks: every call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import kubernetes.client
from kubernetes.client.rest import ApiException

from plumbing import errors, job_files
from plumbing.statuses import EndReason, Status, is_terminal
from services.operator_engine.backends.kubernetes import objects, outcomes
from services.operator_engine.backends.kubernetes.objects import ClusterConfig, ClusterUnfit, JobObjects
from services.operator_engine.backends.kubernetes.watch import Pod, PodWatch, raw
from services.operator_engine.domain.changes import StateChange
from services.operator_engine.domain.jobs import ALGORITHM_LOG, Capacity, JobSpec, StageExit
from services.operator_engine.domain.stages import Stage

log = logging.getLogger("c2d.engine.kubernetes")
T = TypeVar("T")
# Beyond a stage's timeout, how long the engine waits for the pod's own deadline to show.
DEADLINE_GRACE_S = 30.0
REQUEST_TIMEOUT_S = 30
LOG_DRAIN_S = 10.0
API_THREADS = 16
STATUS_COALESCE_S = 0.1  # a ComputeJob's status may lag the job's by this much, for fewer writes
LOG_FOLLOWERS = 1024  # threads made as needed: one per running algorithm
LOG_READ_TIMEOUT_S = 24 * 3600.0  # a quiet algorithm is no reason to stop following; its end closes the stream


@dataclasses.dataclass
class LogCopy:
    """The algorithm's log, followed from its pod into the engine's copy (StreamJobLogs reads it)."""

    path: Path
    limit: int
    task: asyncio.Future[None] | None = None
    response: Any = None

    async def finish(self) -> None:
        """Waits for the copy to reach the log's end (the container has ended), briefly."""
        if self.task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self.task), LOG_DRAIN_S)
        except TimeoutError:
            log.warning("the algorithm's log did not end %g s after its pod: copy cut short", LOG_DRAIN_S)
            if self.response is not None:
                self.response.close()
        except Exception:
            log.exception("copying the algorithm's log failed")


class KubernetesBackend:
    name = "kubernetes"
    sandboxed = True

    def __init__(
        self,
        config: ClusterConfig,
        api_client: kubernetes.client.ApiClient,
        *,
        disk_bytes: int,
        watch_timeout_s: int = 300,
        unschedulable_grace_s: float = 60.0,
    ) -> None:
        self.config = config
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.networking = kubernetes.client.NetworkingV1Api(api_client)
        self.storage = kubernetes.client.StorageV1Api(api_client)
        self._api_client = api_client
        self.disk_bytes = disk_bytes
        self.watch_timeout_s = watch_timeout_s
        self.unschedulable_grace_s = unschedulable_grace_s
        self._unplaced: dict[str, asyncio.TimerHandle] = {}  # awaited pods no node takes: their grace
        self.watch: PodWatch | None = None
        self._pods: dict[str, Pod] = {}  # the latest state of every pod the watch sees, by name
        self._waiters: dict[str, asyncio.Future[StageExit]] = {}
        self._owners: dict[str, dict[str, Any]] = {}  # job id -> its ComputeJob as created
        self._tokens: dict[str, str] = {}  # job id -> the token its Secret holds
        self._stages: dict[str, str] = {}
        self._desired: dict[str, dict[str, Any]] = {}  # job id -> the status to write next
        self._writers: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        # The resourceVersion of each pod this engine created and waits for (None while
        # its create is in flight): a pod list older than that cannot show it, not even gone.
        self._created: dict[str, str | None] = {}
        self._reclaimed: set[str] = set()
        self._logs_wanted: dict[str, LogCopy] = {}  # algorithm pod -> where its log goes
        self._drains: dict[str, asyncio.Future[None]] = {}  # job id -> its log copy's end, until publish
        self._detached = False
        # API calls get threads of their own: the loop's default pool is small (cores + 4),
        # and a log follower holds a thread as long as its algorithm runs (it gets its own).
        self._api_threads = concurrent.futures.ThreadPoolExecutor(API_THREADS, thread_name_prefix="k8s-api")
        self._log_threads = concurrent.futures.ThreadPoolExecutor(LOG_FOLLOWERS, thread_name_prefix="k8s-log")
        self._gone_waiters: dict[str, asyncio.Future[None]] = {}  # pods awaited to disappear

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, agent_address: str) -> None:
        """Checks the cluster can run the jobs, then starts the watch; ClusterUnfit if not."""
        self.config = dataclasses.replace(self.config, agent_address=agent_address)
        await self._check_storage_class()
        await self._check_gpus()
        await self._ensure_pod_programs_policy()
        self.watch = PodWatch(
            self.core,
            self.config.namespace,
            self.config.selector,
            self.watch_timeout_s,
            asyncio.get_running_loop(),
            self._on_event,
            self._on_list,
        )
        self.watch.start()
        try:
            await asyncio.wait_for(self.watch.listed.wait(), REQUEST_TIMEOUT_S)
        except TimeoutError:
            self.watch.stop()
            raise ClusterUnfit(f"could not list pods in namespace {self.config.namespace!r}") from None

    async def close(self) -> None:
        for drain in self._drains.values():
            drain.cancel()  # a publish stage resumed by the next engine fetches what the pod's log has
        await asyncio.gather(*self._writers.values(), *self._background, *self._drains.values(), return_exceptions=True)
        if self.watch is not None:
            self.watch.stop()
        self._api_threads.shutdown(wait=False)
        self._log_threads.shutdown(wait=False)

    def describe(self) -> str:
        gpus = f", {self.config.gpus} GPU(s) per job" if self.config.gpus else ""
        return (
            f"Kubernetes pods in namespace {self.config.namespace} (non-root, read-only root, no capabilities, "
            f"default-deny egress for the algorithm{gpus})"
        )

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        call = functools.partial(fn, *args, _request_timeout=REQUEST_TIMEOUT_S, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._api_threads, call)

    async def _check_storage_class(self) -> None:
        name = self.config.storage_class
        if not name:
            return
        try:
            await self._call(self.storage.read_storage_class, name, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                raise ClusterUnfit(
                    f"storage class {name!r} does not exist on the cluster: set C2D_ENGINE_K8S_STORAGE_CLASS to "
                    "one `kubectl get storageclass` lists, or empty for the cluster's default"
                ) from None
            raise _refused(exc, f"read storage class {name!r}") from None

    async def _check_gpus(self) -> None:
        wanted = self.config.gpus
        if not wanted:
            return
        try:
            nodes = raw(await self._call(self.core.list_node, _preload_content=False))["items"]
        except ApiException as exc:
            raise _refused(exc, "list the cluster's nodes (to find GPUs)") from None
        most = max(
            (int(((n.get("status") or {}).get("allocatable") or {}).get(objects.GPU, 0)) for n in nodes), default=0
        )
        if most < wanted:
            raise ClusterUnfit(
                f"the environment asks for {wanted} GPU(s) per job but no node of the cluster offers that many "
                f"{objects.GPU} (the most is {most}): install the GPU device plugin on GPU nodes, or set "
                "C2D_ENGINE_GPUS lower"
            )

    async def _ensure_pod_programs_policy(self) -> None:
        """Creates the pod programs' NetworkPolicy; the first write, so it also proves the
        engine may write to its namespace."""
        policy = objects.pod_programs_policy(self.config)
        try:
            await self._call(
                self.networking.create_namespaced_network_policy, self.config.namespace, policy, _preload_content=False
            )
        except ApiException as exc:
            if exc.status == 409:
                return
            if exc.status in (401, 403, 404):
                raise ClusterUnfit(
                    f"the engine cannot create objects in namespace {self.config.namespace!r} "
                    f"({exc.status} {exc.reason}): create the namespace, and bind the Role of "
                    "deploy/base/engine-rbac.yaml to the engine's ServiceAccount there "
                    "(or set C2D_ENGINE_K8S_NAMESPACE to the namespace it is bound in)"
                ) from None
            raise

    # -- the watch's events (on the event loop) -------------------------------------------------

    def _on_event(self, type_: str, pod: Pod) -> None:
        name = pod["metadata"]["name"]
        if type_ == "DELETED":
            self._pods.pop(name, None)
            self._freed(name)
        else:
            self._pods[name] = pod
        self._settle(name, type_, pod)

    def _on_list(self, pods: list[Pod], version: str) -> None:
        self._pods = {pod["metadata"]["name"]: pod for pod in pods}
        for name in [n for n in self._gone_waiters if n not in self._pods]:
            self._freed(name)
        for name in list(self._waiters):
            pod = self._pods.get(name)
            if pod is None and not _listed_before(self._created.get(name, _ABSENT), version):
                continue  # created as or after the list was taken: the watch from it tells
            if pod is None:  # gone while no watch ran
                self._settle(name, "DELETED", {"metadata": {"name": name}})
            else:
                self._settle(name, "MODIFIED", pod)

    def _freed(self, name: str) -> None:
        if (gone := self._gone_waiters.get(name)) is not None and not gone.done():
            gone.set_result(None)

    def _settle(self, name: str, type_: str, pod: Pod) -> None:
        copy = self._logs_wanted.get(name)
        if copy is not None and copy.task is None and outcomes.has_started(pod):
            loop = asyncio.get_running_loop()
            copy.task = loop.run_in_executor(self._log_threads, self._follow_log, name, copy)
        waiter = self._waiters.get(name)
        if waiter is None or waiter.done():
            return
        exit_ = outcomes.stage_exit(type_, pod)
        if exit_ is not None:
            waiter.set_result(exit_)
        elif type_ != "DELETED" and outcomes.unschedulable(pod) is not None:
            if name not in self._unplaced:
                grace = self.unschedulable_grace_s
                self._unplaced[name] = asyncio.get_running_loop().call_later(grace, self._unplaceable, name)
        elif (timer := self._unplaced.pop(name, None)) is not None:
            timer.cancel()  # a node took it after all (one an autoscaler added)

    def _unplaceable(self, name: str) -> None:
        """The grace of an unschedulable pod is over: its stage ends (the scheduler's reason)."""
        self._unplaced.pop(name, None)
        waiter, pod = self._waiters.get(name), self._pods.get(name, {})
        if waiter is not None and not waiter.done() and (why := outcomes.unschedulable(pod)) is not None:
            waiter.set_result(outcomes.not_scheduled(pod, why))

    # -- submit-time checks --------------------------------------------------------------------------

    def validate(self, entrypoint: str, image: str, allow_network: bool, tag: str = "", checksum: str = "") -> None:
        try:
            objects.image_reference(image, tag, checksum)
            objects.algorithm_command(entrypoint)
        except objects.ImageRefused as exc:
            raise errors.InvalidArgument(
                f"the algorithm's container cannot run on Kubernetes: {exc}",
                "container_invalid",
                field=f"workflow.container.{exc.part}",
            ) from None

    # -- a job's objects ---------------------------------------------------------------------------

    def reclaim(self, job: JobSpec) -> None:
        self._reclaimed.add(job.job_id)

    def outlived_restart(self, job: JobSpec, stage: Stage) -> bool:
        pod = self._pods.get(JobObjects(self.config, job).pod_name(stage.name or "algorithm"))
        return pod is not None and outcomes.stage_exit("MODIFIED", pod) is None

    async def abandon(self, job: JobSpec) -> None:
        return None  # the job's end releases it: deleting its ComputeJob deletes the pods it owns

    def detach(self) -> None:
        """The engine is shutting down, not stopping jobs: the stages it cancels keep their
        pods, which the next engine follows (outlived_restart)."""
        self._detached = True

    async def sweep_orphans(self, is_active: Callable[[str], bool]) -> list[str]:
        """At start-up, after recovery: deletes what this engine's jobs left that no job it
        holds (queued or running) owns: each such ComputeJob, with the claim, Secret, policy
        and pods it owns, also one left without pods (the engine died before its first pod,
        or between deleting the pods and it), and pods without a ComputeJob. The job ids swept."""
        listed = raw(
            await self._call(
                self.custom.list_namespaced_custom_object,
                objects.GROUP,
                objects.VERSION,
                self.config.namespace,
                objects.PLURAL,
                label_selector=self.config.selector,
                _preload_content=False,
            )
        )
        owners = {_job_id(item): item["metadata"]["name"] for item in listed["items"]}
        pods = {name: _job_id(pod) for name, pod in self._pods.items()}
        orphans = sorted(job_id for job_id in {*owners, *pods.values()} if not is_active(job_id))
        for job_id in orphans:
            log.warning(
                "job %s: its Kubernetes objects outlived the job (not in this engine's log); deleting them", job_id
            )
            if owner := owners.get(job_id) or (job_id and objects.object_name(job_id)):
                await self._delete_owner(owner)
        for name, job_id in pods.items():
            if job_id in orphans:
                await self._delete_pod(name)  # a pod whose owner is gone already is not collected
        return orphans

    async def prepare(self, job: JobSpec) -> None:
        await asyncio.to_thread(_fresh_workspace, job)
        job_objects = JobObjects(self.config, job)
        owner = await self._create_owner(job_objects)
        ns = self.config.namespace
        await self._call(
            self.core.create_namespaced_persistent_volume_claim,
            ns,
            job_objects.volume_claim(owner, self.disk_bytes),
            _preload_content=False,
        )
        await self._call(self.core.create_namespaced_secret, ns, job_objects.secret(owner), _preload_content=False)
        await self._call(
            self.networking.create_namespaced_network_policy,
            ns,
            job_objects.algorithm_policy(owner),
            _preload_content=False,
        )
        self._owners[job.job_id], self._tokens[job.job_id] = owner, job.token
        self._kick(job.job_id)

    async def _create_owner(self, job_objects: JobObjects) -> dict[str, Any]:
        """The job's ComputeJob; one left by an earlier attempt (a configure re-run
        after a restart) is deleted with what it owns first: the stage starts clean."""
        body = job_objects.compute_job()
        for _ in range(100):
            try:
                created = await self._call(
                    self.custom.create_namespaced_custom_object,
                    objects.GROUP,
                    objects.VERSION,
                    self.config.namespace,
                    objects.PLURAL,
                    body,
                )
                return cast(dict[str, Any], created)
            except ApiException as exc:
                if exc.status != 409:
                    raise
            await self._delete_owner(job_objects.name, propagation="Foreground")
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the ComputeJob {job_objects.name} of an earlier attempt is not going away")

    async def _owner_of(self, job: JobSpec) -> dict[str, Any]:
        owner = self._owners.get(job.job_id)
        if owner is None:  # after a restart: the ComputeJob the previous engine created
            owner = cast(
                dict[str, Any],
                await self._call(
                    self.custom.get_namespaced_custom_object,
                    objects.GROUP,
                    objects.VERSION,
                    self.config.namespace,
                    objects.PLURAL,
                    objects.object_name(job.job_id),
                ),
            )
            self._owners[job.job_id] = owner
        if self._tokens.get(job.job_id) != job.token:  # a restarted engine gave the job a new token
            await self._call(
                self.core.patch_namespaced_secret,
                objects.object_name(job.job_id),
                self.config.namespace,
                {"data": {objects.TOKEN_KEY: base64.b64encode(job.token.encode()).decode()}},
                _preload_content=False,
            )
            self._tokens[job.job_id] = job.token
        return owner

    async def _delete_owner(self, name: str, propagation: str = "Background") -> None:
        with contextlib.suppress(ApiException):
            try:
                await self._call(
                    self.custom.delete_namespaced_custom_object,
                    objects.GROUP,
                    objects.VERSION,
                    self.config.namespace,
                    objects.PLURAL,
                    name,
                    propagation_policy=propagation,
                )
            except ApiException as exc:
                if exc.status != 404:
                    log.warning("could not delete the ComputeJob %s: %s", name, exc.reason)
                raise

    # -- stages -----------------------------------------------------------------------------------

    async def run_pod(self, stage: Stage, job: JobSpec) -> StageExit:
        if (drain := self._drains.pop(job.job_id, None)) is not None:
            await drain  # the algorithm's log complete before pod_publish fetches it
        job_objects = JobObjects(self.config, job)
        owner = await self._owner_of(job)
        timeout_s = stage.timeout_for(job)
        name = job_objects.pod_name(stage.name)
        if name in self._pods:  # an earlier engine's, with the token it gave: this run starts over
            await self._delete_pod(name)
            await self._gone(name)
        exit_ = await self._run(name, job_objects.pod_program(owner, stage.name, timeout_s), timeout_s)
        # The termination message is the tail of a failed pod's log: the operator's, kept past the pod.
        if message := outcomes.termination_message(self._pods.get(name, {})):
            await asyncio.to_thread(_append, job.admin_dir / f"{stage.name}.log", message)
        return exit_

    async def run_algorithm(self, job: JobSpec, capacity: Capacity) -> StageExit:
        job_objects = JobObjects(self.config, job)
        owner = await self._owner_of(job)
        name = job_objects.pod_name("algorithm")
        started = time.monotonic()
        # Its log is followed into the engine's copy from the moment its container starts.
        self._logs_wanted[name] = LogCopy(job.workspace / ALGORITHM_LOG, capacity.log_max_bytes)
        try:
            exit_ = await self._run(name, job_objects.algorithm_pod(owner, capacity), job.algorithm_timeout_s)
        finally:
            copy = self._logs_wanted.pop(name)
        # The copy's last bytes are awaited by the publish stage, which reads it (run_pod), not
        # here: the job moves on as soon as its pod ended (the follower thread may lag on a busy host).
        self._drains[job.job_id] = asyncio.ensure_future(copy.finish())
        return dataclasses.replace(exit_, duration_s=time.monotonic() - started)

    async def _run(self, name: str, body: dict[str, Any], timeout_s: float) -> StageExit:
        """Creates the pod and waits for the watch to say how it ended; a stop or the
        engine's own timeout deletes it."""
        waiter: asyncio.Future[StageExit] = asyncio.get_running_loop().create_future()
        self._waiters[name] = waiter
        self._created[name] = None  # being created: no list can say it is gone
        try:
            try:
                created = await self._call(
                    self.core.create_namespaced_pod, self.config.namespace, body, _preload_content=False
                )
                self._created[name] = str(raw(created)["metadata"]["resourceVersion"])
            except ApiException as exc:
                if exc.status != 409:
                    raise
                log.info("pod %s exists already (a stage resumed after a restart): following it", name)
            if (pod := self._pods.get(name)) is not None:
                self._settle(name, "MODIFIED", pod)
            exit_ = await asyncio.wait_for(asyncio.shield(waiter), timeout_s + DEADLINE_GRACE_S)
            if exit_.not_started:  # deleted, so that it cannot start later, once the job has moved on
                await self._delete_pod(name)
            return exit_
        except TimeoutError:
            await self._delete_pod(name)
            return StageExit(None, timed_out=True, detail=f"the pod did not end within {timeout_s:g} s")
        except asyncio.CancelledError:
            if not self._detached:  # a stop; an engine shutting down leaves the pod to its successor
                await self._delete_pod(name)
            raise
        finally:
            self._waiters.pop(name, None)
            self._created.pop(name, None)
            if (timer := self._unplaced.pop(name, None)) is not None:
                timer.cancel()

    async def _gone(self, name: str) -> None:
        """Until the watch saw the pod go (its name is then free again)."""
        if name not in self._pods:
            return
        gone = self._gone_waiters.setdefault(name, asyncio.get_running_loop().create_future())
        try:
            await asyncio.wait_for(asyncio.shield(gone), REQUEST_TIMEOUT_S)
        finally:
            self._gone_waiters.pop(name, None)

    async def _delete_pod(self, name: str) -> None:
        try:
            await self._call(
                self.core.delete_namespaced_pod,
                name,
                self.config.namespace,
                grace_period_seconds=0,
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status != 404:
                log.warning("could not delete pod %s: %s", name, exc.reason)

    def _follow_log(self, name: str, copy: LogCopy) -> None:
        """In a worker thread: the pod's log as it is written (pods/log, follow), up to the cap."""
        try:
            response: Any = self.core.read_namespaced_pod_log(
                name,
                self.config.namespace,
                follow=True,
                limit_bytes=copy.limit,
                _preload_content=False,
                _request_timeout=(REQUEST_TIMEOUT_S, LOG_READ_TIMEOUT_S),
            )
        except ApiException as exc:
            log.warning("could not follow the log of pod %s: %s", name, exc.reason)
            return
        copy.response = response
        written = 0
        with copy.path.open("wb") as f:
            job_files.share_with_reader(f.fileno())  # StreamJobLogs reads it unprivileged
            for chunk in response.stream(64 * 1024):
                f.write(chunk[: copy.limit - written])
                f.flush()
                written += len(chunk)
                if written >= copy.limit:
                    break
        response.release_conn()

    # -- the end ----------------------------------------------------------------------------------

    def mirror(self, change: StateChange, stage: str | None) -> None:
        """A state change of the job, to its ComputeJob's status (written in the background)."""
        status = Status(change.status)
        if stage is not None:
            self._stages[change.job_id] = stage
        shown = "done" if is_terminal(status) else self._stages.get(change.job_id, "queued")
        self._desired[change.job_id] = objects.job_status(
            status, shown, EndReason(change.end_reason), change.error_code, change.error_message
        )
        self._kick(change.job_id)

    def _kick(self, job_id: str) -> None:
        if job_id in self._owners and job_id not in self._writers and job_id in self._desired:
            writer = asyncio.create_task(self._write_status(job_id), name=f"k8s-status-{job_id}")
            self._writers[job_id] = writer

            def done(_: asyncio.Task[None]) -> None:
                self._writers.pop(job_id, None)
                self._kick(job_id)  # a change that came after the writer's last look

            writer.add_done_callback(done)

    async def _write_status(self, job_id: str) -> None:
        await asyncio.sleep(STATUS_COALESCE_S)  # changes in quick succession (30 then 40): one write
        while (body := self._desired.pop(job_id, None)) is not None and (owner := self._owners.get(job_id)):
            try:
                await self._call(
                    self.custom.patch_namespaced_custom_object_status,
                    objects.GROUP,
                    objects.VERSION,
                    self.config.namespace,
                    objects.PLURAL,
                    owner["metadata"]["name"],
                    body,
                )
            except ApiException as exc:
                if exc.status != 404:
                    log.warning("job %s: could not write the ComputeJob's status: %s", job_id, exc.reason)

    def release(self, job: JobSpec) -> None:
        task = asyncio.create_task(self._cleanup(job.job_id), name=f"k8s-cleanup-{job.job_id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _cleanup(self, job_id: str) -> None:
        if (drain := self._drains.pop(job_id, None)) is not None:  # a job stopped before publishing
            await drain
        if (writer := self._writers.get(job_id)) is not None:
            await asyncio.gather(writer, return_exceptions=True)
        await self._write_status(job_id)  # the last status, for those watching the ComputeJob
        self._owners.pop(job_id, None)
        self._tokens.pop(job_id, None)
        self._stages.pop(job_id, None)
        await self._delete_owner(objects.object_name(job_id))

    async def remove(self, job_id: str, workspace: Path) -> None:
        await self._delete_owner(objects.object_name(job_id))
        await asyncio.to_thread(shutil.rmtree, workspace, ignore_errors=True)


def _refused(exc: ApiException, what: str) -> Exception:
    """A start-up check the API refused: ClusterUnfit when the engine's identity lacks a right."""
    if exc.status in (401, 403):
        return ClusterUnfit(
            f"the engine may not {what} ({exc.status} {exc.reason}): apply the ClusterRole and "
            "ClusterRoleBinding of deploy/base/engine-rbac.yaml for the engine's ServiceAccount"
        )
    return exc


def _job_id(obj: dict[str, Any]) -> str:
    """The job an object of a job belongs to (every one carries its id)."""
    return str(obj["metadata"].get("annotations", {}).get(objects.JOB_ID_ANNOTATION, ""))


def _listed_before(created: object, version: str) -> bool:
    """Whether a pod list at `version` came after the pod's creation (a pod this engine
    did not create, e.g. one found at a restart: `created` absent, so yes)."""
    if created is _ABSENT:
        return True
    if created is None:
        return False
    try:
        return int(str(created)) <= int(version)
    except ValueError:  # not numbers on this server: trust the list
        return True


_ABSENT = object()


def _fresh_workspace(job: JobSpec) -> None:
    """The engine's side of the job: its admin logs and the algorithm's log copy (admin/)."""
    if job.workspace.exists():
        shutil.rmtree(job.workspace)
    job.admin_dir.mkdir(parents=True)


def _append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(text.rstrip("\n") + "\n")
