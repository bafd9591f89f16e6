"""The test kubelet: runs the pods of the emulated API server as a node would.

::

    with ApiServer() as api, Kubelet(api, tmp_path) as kubelet:
        kubelet.plan(OOMKilled(), labels={"c2d.dev/stage": "algorithm"})
        ...                                   # the backend creates pods; they run

It registers its Node (``node_name``; ``gpus`` adds ``nvidia.com/gpu`` to
its capacity), then watches every pod through the API (list, then watch from
the list's resourceVersion, again from the last one it saw, re-listing on
410) and, for each pod not bound to another node:

1. schedules it: Unschedulable (condition PodScheduled False, with the
   scheduler's message) while a claim it mounts does not exist, it asks for
   more CPU, memory or GPUs than the node has (``cpu``, ``memory``,
   ``gpus``), or its nodeSelector does not match the node's ``labels``;
   else binds it (``pods/binding``) and marks its claims Bound;
2. starts it: Pending with startTime, the container waiting
   ContainerCreating; then the container as a local process (containers.py)
   whose stdout and stderr are the pod's log (``pods/log``), Running;
3. ends it: Succeeded or Failed with the container's terminated state (exit
   code, reason Completed, Error or OOMKilled, the termination message),
   or Failed with reason DeadlineExceeded once ``activeDeadlineSeconds`` has
   passed since its start;
4. on a deletion (deletionTimestamp): stops the container (SIGTERM, then
   SIGKILL after the grace period, at most 2 s), records it terminated (exit
   143 or 137), and confirms the deletion with grace 0. A pod deleted
   outright just loses its process.

Failure scenarios are played instead of step 2-3 for the pods a plan matches
(scenarios.py). ``claim_path(namespace, claim)`` is the directory standing in
for a PersistentVolumeClaim, so a test can put inputs in or read outputs.
Every call it makes carries the User-Agent ``testkit-kubelet``, so
``api.calls(user_agent=...)`` can tell a backend's calls from its own.
``restartPolicy`` is treated as Never: a container is never restarted.
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes.client
import urllib3
from kubernetes import watch
from kubernetes.client.rest import ApiException
from kubernetes.utils import parse_quantity

from testkit.kube import containers, scenarios
from testkit.kube.logs import ContainerLog
from testkit.kube.scenarios import Plan, Scenario
from testkit.kube.server import ApiServer

log = logging.getLogger("testkit.kubelet")
USER_AGENT = "testkit-kubelet"
GPU = "nvidia.com/gpu"
MAX_GRACE_S = 2.0
WATCH_TIMEOUT_S = 30
# The scenarios that end on their own after a while (Hang waits for a deadline or a deletion).
_TIMED = (scenarios.Exit, scenarios.OOMKilled, scenarios.NodeLost, scenarios.Deleted)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PodGone(Exception):
    """The pod was deleted: nothing is left to report."""


class Kubelet:
    def __init__(
        self,
        api: ApiServer,
        root: Path,
        *,
        node_name: str = "testkit-node",
        gpus: int = 0,
        cpu: str = "2",
        memory: str = "4Gi",
        labels: Mapping[str, str] | None = None,
    ):
        self.api, self.root, self.node_name, self.gpus = api, root, node_name, gpus
        self.labels = {"kubernetes.io/hostname": node_name, **(labels or {})}
        self.capacity = {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "100Gi"}
        if gpus:
            self.capacity[GPU] = str(gpus)
        self.core = kubernetes.client.CoreV1Api(api.api_client(user_agent=USER_AGENT))
        self._plans: list[Plan] = []
        self._workers: dict[str, PodWorker] = {}
        self._every_worker: list[PodWorker] = []  # also those whose pod is gone: they may still be ending
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listed = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread: threading.Thread | None = None

    # -- the test's handles ------------------------------------------------------------------

    def plan(self, scenario: Scenario, *, name: str | None = None, labels: Mapping[str, str] | None = None) -> None:
        """Plays ``scenario`` on the pods matching ``name`` (a glob) and ``labels``; earlier plans win."""
        with self._lock:
            self._plans.append(Plan(scenario, name, dict(labels or {})))

    def forget_plans(self) -> None:
        """Pods from now on run as they are (Run()), as a fixed problem lets them."""
        with self._lock:
            self._plans.clear()

    def scenario_for(self, pod: Mapping[str, Any]) -> Scenario:
        with self._lock:
            return next((plan.scenario for plan in self._plans if plan.matches(pod)), scenarios.Run())

    def claim_path(self, namespace: str, claim: str) -> Path:
        return containers.claim_directory(self.root, namespace, claim)

    def log_path(self, pod: Mapping[str, Any], container: str) -> Path:
        metadata = pod["metadata"]
        directory = self.root / "logs" / f"{metadata['namespace']}_{metadata['name']}_{metadata['uid']}"
        directory.mkdir(parents=True, exist_ok=True)
        return directory / f"{container}.log"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Kubelet:
        self._register_node()
        self._thread = threading.Thread(target=self._watch_pods, name=f"kubelet-{self.node_name}", daemon=True)
        self._thread.start()
        if not self._listed.wait(30):
            raise RuntimeError("the test kubelet could not list pods")
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._watch is not None:
            self._watch.stop()
        if self._thread is not None:
            self._thread.join(30)
        with self._lock:
            workers = list(self._every_worker)
        for worker in workers:
            worker.vanish()
        for worker in workers:
            worker.join(30)

    def __enter__(self) -> Kubelet:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _register_node(self) -> None:
        status = {
            "capacity": self.capacity,
            "allocatable": self.capacity,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "the test kubelet is posting ready status",
                    "lastHeartbeatTime": now(),
                    "lastTransitionTime": now(),
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node_name},
            ],
        }
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node_name, "labels": self.labels},
            "status": status,
        }
        try:
            self.core.create_node(node, _preload_content=False)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self.core.patch_node_status(self.node_name, {"status": status}, _preload_content=False)

    # -- the watch -----------------------------------------------------------------------------

    def _watch_pods(self) -> None:
        version = None
        while not self._stopping.is_set():
            try:
                if version is None:
                    listed = self.core.list_pod_for_all_namespaces(_preload_content=False).json()
                    version = listed["metadata"]["resourceVersion"]
                    for pod in listed["items"]:
                        self._observe("ADDED", pod)
                    self._listed.set()
                self._watch = watch.Watch()
                for event in self._watch.stream(
                    self.core.list_pod_for_all_namespaces,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=WATCH_TIMEOUT_S,
                    _request_timeout=WATCH_TIMEOUT_S + 10,
                ):
                    version = event["raw_object"]["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        self._observe(event["type"], event["raw_object"])
            except ApiException as exc:
                if exc.status == 410:
                    version = None  # too old: list again
                elif not self._stopping.is_set():
                    log.warning("the kubelet's pod watch failed: %s", exc)
                    time.sleep(0.2)
            except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError) as exc:
                if not self._stopping.is_set():
                    log.info("the kubelet's pod watch broke off (%s); watching again", exc)
            except Exception:
                if not self._stopping.is_set():
                    log.exception("the kubelet's pod watch failed")
                    time.sleep(0.2)

    def _observe(self, type_: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            worker = self._workers.get(uid)
            if type_ == "DELETED":
                self._workers.pop(uid, None)
            elif worker is None and self._is_ours(pod):
                worker = self._workers[uid] = PodWorker(self, pod)
                self._every_worker.append(worker)
                if pod["metadata"].get("deletionTimestamp"):
                    worker.request_deletion(pod)  # bound here before this kubelet started: let it go
                worker.start()
                return
        if worker is None:
            return
        if type_ == "DELETED" or pod["spec"].get("nodeName") not in (None, "", self.node_name):
            worker.vanish()  # gone, or scheduled by another kubelet
        elif pod["metadata"].get("deletionTimestamp"):
            worker.request_deletion(pod)
            if not worker.is_alive():
                # its container ended as the delete came (graceful, as for a running pod):
                # a real kubelet confirms the deletion of a terminated pod at once
                worker.confirm_deletion()

    def _is_ours(self, pod: Mapping[str, Any]) -> bool:
        node = pod["spec"].get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        return node in (None, "", self.node_name) and phase not in ("Succeeded", "Failed")


class PodWorker(threading.Thread):
    """Carries one pod from scheduling to its end."""

    def __init__(self, kubelet: Kubelet, pod: dict[str, Any]):
        super().__init__(name=f"pod-{pod['metadata']['name']}", daemon=True)
        self.kubelet, self.pod = kubelet, pod
        self.namespace, self.name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        self.container = (pod["spec"].get("containers") or [{}])[0]
        self.wake = threading.Event()
        self.deleting: dict[str, Any] | None = None  # the pod as its deletion was requested
        self.deletion_confirmed = False
        self.gone = False
        self.process: subprocess.Popen[bytes] | None = None
        self.exited = threading.Event()  # the process ended (not yet reaped: its group id stays ours)
        self.started_at = ""
        self.log: ContainerLog | None = None

    # -- signals from the watch --------------------------------------------------------------------

    def request_deletion(self, pod: dict[str, Any]) -> None:
        self.deleting = pod
        self.wake.set()

    def vanish(self) -> None:
        self.gone = True
        self.wake.set()

    def _sleep(self, seconds: float | None) -> None:
        """Waits for the time, or a signal; raises PodGone once the pod is gone."""
        self.wake.wait(seconds)
        self.wake.clear()
        if self.gone:
            raise PodGone

    # -- the pod's life ---------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._live()
        except PodGone:
            pass
        except Exception:
            log.exception("the test kubelet failed on pod %s/%s", self.namespace, self.name)
        finally:
            self._kill(0)
            if self.deleting is not None and not self.gone and not self.deletion_confirmed:
                self.confirm_deletion()  # it may have come while the pod was ending

    def _live(self) -> None:
        if self.deleting is not None:
            return self._confirm_deletion()
        scenario = self.kubelet.scenario_for(self.pod)
        if not self.pod["spec"].get("nodeName") and not self._schedule(scenario):
            return
        if isinstance(scenario, scenarios.Unschedulable):
            scenario = scenarios.Run()  # its node came: it runs as any other
        self.started_at = now()
        self._status(phase="Pending", container=self._container_status({"waiting": {"reason": "ContainerCreating"}}))
        local: containers.LocalContainer | None = None
        try:
            if isinstance(scenario, scenarios.Run):
                local = containers.prepare(self.pod, self.kubelet.root, self._read)
            elif not isinstance(scenario, scenarios.Waiting) and not containers.valid_image(
                self.container.get("image", "")
            ):
                raise containers.NotStartable(
                    "InvalidImageName", f'invalid reference format: "{self.container.get("image")}"'
                )
        except containers.NotStartable as exc:
            scenario = scenarios.Waiting(exc.reason, exc.message)
        if isinstance(scenario, scenarios.Waiting):
            return self._wait_forever(scenario)
        log_file = self.kubelet.log_path(self.pod, self.container["name"])
        log_file.touch()
        self.log = self.kubelet.api.pod_logs.started(
            self.namespace, self.name, self.pod["metadata"]["uid"], self.container["name"], log_file
        )
        if local is not None:
            self.process = local.start(log_file)
            threading.Thread(target=self._await_exit, daemon=True).start()
        elif isinstance(scenario, (scenarios.Exit, scenarios.OOMKilled, scenarios.Hang)):
            log_file.write_text(scenario.log)
        self._status(
            phase="Running", ready=True, container=self._container_status({"running": {"startedAt": now()}}, ready=True)
        )
        self._supervise(scenario, log_file, local.termination_message if local is not None else None)

    def _await_exit(self) -> None:
        assert self.process is not None
        try:
            os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass  # reaped by a kill meanwhile
        self.exited.set()
        self.wake.set()

    def _schedule(self, scenario: Scenario) -> bool:
        reported = None
        since = time.monotonic()
        while True:
            problem = self._unschedulable(scenario, time.monotonic() - since)
            if problem is None:
                break
            if problem != reported:
                reported = problem
                condition = {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": problem,
                    "lastTransitionTime": now(),
                }
                self._patch({"conditions": [condition]})
            self._sleep(0.2)
            if self.deleting is not None:
                return False  # unbound: the API server deletes it at once
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": self.name},
            "target": {"kind": "Node", "name": self.kubelet.node_name},
        }
        try:
            self._call(self.kubelet.core.create_namespaced_pod_binding, self.name, self.namespace, binding)
        except ApiException as exc:
            if exc.status == 409:
                return False  # another kubelet bound it first
            raise
        for volume in self.pod["spec"].get("volumes") or []:
            if "persistentVolumeClaim" in volume:
                self._bind_claim(volume["persistentVolumeClaim"]["claimName"])
        return True

    def _unschedulable(self, scenario: Scenario, waited_s: float) -> str | None:
        if isinstance(scenario, scenarios.Unschedulable) and (scenario.for_s is None or waited_s < scenario.for_s):
            return scenario.message
        selector = self.pod["spec"].get("nodeSelector") or {}
        if any(self.kubelet.labels.get(key) != value for key, value in selector.items()):
            return "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
        for volume in self.pod["spec"].get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim and self._read("persistentvolumeclaims", self.namespace, claim) is None:
                return f'0/1 nodes are available: persistentvolumeclaim "{claim}" not found.'
        wanted = sum(
            int(
                ((c.get("resources") or {}).get("limits") or {}).get(GPU, 0)
                or ((c.get("resources") or {}).get("requests") or {}).get(GPU, 0)
            )
            for c in self.pod["spec"].get("containers") or []
        )
        if wanted > self.kubelet.gpus:
            return f"0/1 nodes are available: 1 Insufficient {GPU}."
        for resource in ("cpu", "memory"):
            asked = sum(
                parse_quantity(((c.get("resources") or {}).get("requests") or {}).get(resource, 0))
                for c in self.pod["spec"].get("containers") or []
            )
            if asked > parse_quantity(self.kubelet.capacity[resource]):
                return f"0/1 nodes are available: 1 Insufficient {resource}."
        return None

    def _bind_claim(self, claim: str) -> None:
        current = self._read("persistentvolumeclaims", self.namespace, claim)
        if current is None or (current.get("status") or {}).get("phase") == "Bound":
            return
        spec = current.get("spec") or {}
        status = {
            "phase": "Bound",
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "capacity": {"storage": ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")},
        }
        try:
            self.kubelet.core.patch_namespaced_persistent_volume_claim_status(
                claim, self.namespace, {"status": status}, _preload_content=False
            )
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: the pod will find out
                raise

    def _wait_forever(self, scenario: scenarios.Waiting) -> None:
        """The container never starts; the pod stays Pending until it is deleted."""
        for reason in (*scenario.before, scenario.reason):
            self._status(
                phase="Pending",
                container=self._container_status({"waiting": {"reason": reason, "message": scenario.message}}),
            )
            self._sleep(0.1 if reason != scenario.reason else 0)
            if self.deleting is not None:
                return self._confirm_deletion()
        while self.deleting is None:
            self._sleep(None)
        return self._confirm_deletion()

    def _supervise(self, scenario: Scenario, log_file: Path, message_file: Path | None) -> None:
        started = time.monotonic()
        deadline_s = self.pod["spec"].get("activeDeadlineSeconds")
        ends_after = scenario.after_s if isinstance(scenario, _TIMED) else None
        while True:
            elapsed = time.monotonic() - started
            if self.deleting is not None:
                return self._terminate_for_deletion()
            if self.exited.is_set():
                return self._terminated(self._exit_code(), log_file, message_file)
            if deadline_s is not None and elapsed >= deadline_s:
                self._kill(0)
                return self._terminated(137, log_file, message_file, pod_reason="DeadlineExceeded")
            if ends_after is not None and elapsed >= ends_after:
                return self._end_simulated(scenario, log_file)
            waits = [limit - elapsed for limit in (deadline_s, ends_after) if limit is not None]
            self._sleep(min(waits) if waits else None)

    def _end_simulated(self, scenario: Scenario, log_file: Path) -> None:
        match scenario:
            case scenarios.Exit(code=code):
                self._terminated(code, log_file, None)
            case scenarios.OOMKilled():
                self._terminated(137, log_file, None, reason="OOMKilled")
            case scenarios.NodeLost():
                disruption = {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "DeletionByPodGC",
                    "message": "PodGC: node no longer exists",
                    "lastTransitionTime": now(),
                }
                self._patch(
                    {"phase": "Failed", "conditions": [disruption, self._condition("Ready", False, "PodFailed")]}
                )
                self._call(self.kubelet.core.delete_namespaced_pod, self.name, self.namespace, grace_period_seconds=0)
                self._sleep(None)  # until the DELETED event
            case scenarios.Deleted():
                self._call(self.kubelet.core.delete_namespaced_pod, self.name, self.namespace)
                while self.deleting is None:
                    self._sleep(None)
                self._terminate_for_deletion()

    def _terminate_for_deletion(self) -> None:
        assert self.deleting is not None
        grace = self.deleting["metadata"].get("deletionGracePeriodSeconds") or 0
        code = 143
        if self.process is not None:
            self._kill(min(grace, MAX_GRACE_S))
            code = self._exit_code()
        log_file = self.kubelet.log_path(self.pod, self.container["name"])
        self._terminated(code, log_file, None)
        self._confirm_deletion()

    def confirm_deletion(self) -> None:
        """Confirms a deletion that came as or after the pod's container ended."""
        try:
            self._confirm_deletion()
        except PodGone:
            pass  # confirmed already

    def _confirm_deletion(self) -> None:
        self._call(self.kubelet.core.delete_namespaced_pod, self.name, self.namespace, grace_period_seconds=0)
        self.deletion_confirmed = True

    # -- processes ---------------------------------------------------------------------------

    def _kill(self, grace_s: float) -> None:
        """SIGTERM, then after the grace period SIGKILL to the whole group, which also ends the init of
        bwrap's pid namespace (it ignores SIGTERM) and so every process left in the container."""
        process = self.process
        if process is None or process.returncode is not None:
            return  # never started, or reaped: its group id may belong to someone else now
        try:
            if grace_s > 0:
                os.killpg(process.pid, signal.SIGTERM)
                self.exited.wait(grace_s)
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()

    def _exit_code(self) -> int:
        assert self.process is not None
        self._kill(0)  # what may be left of the container: the program has ended
        code = self.process.wait()
        return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a container runtime says

    # -- status ------------------------------------------------------------------------------------

    def _terminated(
        self,
        code: int,
        log_file: Path,
        message_file: Path | None,
        *,
        reason: str | None = None,
        pod_reason: str | None = None,
    ) -> None:
        state: dict[str, Any] = {
            "exitCode": code,
            "reason": reason or ("Completed" if code == 0 else "Error"),
            "startedAt": self.started_at,
            "finishedAt": now(),
            "containerID": self._container_id(),
        }
        if message := self._termination_message(code, log_file, message_file):
            state["message"] = message
        if self.log is not None:
            self.log.finished.set()  # a follower has read it all once it reaches the end
        succeeded = code == 0 and pod_reason is None
        why = {}
        if pod_reason == "DeadlineExceeded":
            why = {"reason": pod_reason, "message": "Pod was active on the node longer than the specified deadline"}
        self._status(
            phase="Succeeded" if succeeded else "Failed",
            container=self._container_status({"terminated": state}),
            why=why,
        )

    def _termination_message(self, code: int, log_file: Path, message_file: Path | None) -> str:
        message = message_file.read_bytes()[:4096].decode(errors="replace") if message_file is not None else ""
        if not message and code != 0 and self.container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            lines = log_file.read_bytes()[-2048:].decode(errors="replace").splitlines()[-80:]
            message = "\n".join(lines)
        return message

    def _container_id(self) -> str:
        return f"testkit://{self.pod['metadata']['uid']}/{self.container.get('name', '')}"

    def _container_status(self, state: dict[str, Any], *, ready: bool = False) -> dict[str, Any]:
        status = {
            "name": self.container.get("name", ""),
            "image": self.container.get("image", ""),
            "imageID": "",
            "ready": ready,
            "restartCount": 0,
            "started": "running" in state,
            "state": state,
        }
        if "waiting" not in state:
            status["containerID"] = self._container_id()
        return status

    @staticmethod
    def _condition(type_: str, true: bool, reason: str | None = None) -> dict[str, Any]:
        condition = {"type": type_, "status": "True" if true else "False", "lastTransitionTime": now()}
        if reason:
            condition["reason"] = reason
        return condition

    def _status(
        self, *, phase: str, container: dict[str, Any], ready: bool = False, why: Mapping[str, str] | None = None
    ) -> None:
        """The pod's whole status; ``why`` is the pod-level reason and message of a failure."""
        not_ready = None if ready else ("PodCompleted" if phase == "Succeeded" else "ContainersNotReady")
        self._patch(
            {
                "phase": phase,
                "hostIP": "127.0.0.1",
                "podIP": "127.0.0.1",
                "podIPs": [{"ip": "127.0.0.1"}],
                "startTime": self.started_at,
                "qosClass": "BestEffort",
                "conditions": [
                    self._condition("PodScheduled", True),
                    self._condition("Initialized", True),
                    self._condition("ContainersReady", ready, not_ready),
                    self._condition("Ready", ready, not_ready),
                ],
                "containerStatuses": [container],
                **(why or {}),
            }
        )

    # -- the API -------------------------------------------------------------------------------------

    def _patch(self, status: dict[str, Any]) -> None:
        self._call(self.kubelet.core.patch_namespaced_pod_status, self.name, self.namespace, {"status": status})

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> None:
        """Calls the API about this pod; its 404 means the pod is gone."""
        try:
            method(*args, _preload_content=False, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                raise PodGone from None
            raise

    def _read(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        reader = {
            "secrets": self.kubelet.core.read_namespaced_secret,
            "configmaps": self.kubelet.core.read_namespaced_config_map,
            "persistentvolumeclaims": self.kubelet.core.read_namespaced_persistent_volume_claim,
        }[plural]
        try:
            return reader(name, namespace, _preload_content=False).json()
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
