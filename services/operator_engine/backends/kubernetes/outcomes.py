"""How a pod's state ends a stage: the watch's events turned into StageExits.

Pure: a pod as the API gives it (a dict) in, the stage's exit out, or None
while the pod may still get somewhere. A container that cannot start
(ImagePullBackOff, ErrImagePull, InvalidImageName,
CreateContainerConfigError) ends the stage at once with its reason and image
instead of leaving it Pending until its deadline; a pod the scheduler cannot
place is told by `unschedulable` (the backend gives it a grace first: an
autoscaler may add a node).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.operator_engine.backends.kubernetes.objects import FAIL_FAST_REASONS, STAGE_LABEL
from services.operator_engine.domain.jobs import StageExit

MAX_MESSAGE = 300  # of a kubelet's message in a job's error (they quote image names, not data)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def _container_state(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    return statuses[0].get("state") or {}


def _node_lost(pod: Mapping[str, Any]) -> str | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            return _short(f"{condition.get('reason', '')}: {condition.get('message', '')}")
    return None


def stage_exit(event: str, pod: Mapping[str, Any], deleting: bool = False) -> StageExit | None:
    """The stage's exit once `pod` (seen in a watch `event`) says how it ended; `deleting`:
    the engine itself deleted it (a stop), so its end is not a failure of its own."""
    status = pod.get("status") or {}
    phase = status.get("phase", "")
    state = _container_state(pod)
    terminated = state.get("terminated") or {}
    deleted_by_someone = not deleting and (event == "DELETED" or pod.get("metadata", {}).get("deletionTimestamp"))
    if lost := _node_lost(pod):
        return StageExit(None, detail=f"its node was lost ({lost})")
    if phase == "Succeeded":
        return StageExit(0, detail="exit code 0")
    if phase == "Failed":
        if status.get("reason") == "DeadlineExceeded":
            return StageExit(None, timed_out=True, detail="DeadlineExceeded: " + _short(status.get("message", "")))
        if deleted_by_someone:
            code = terminated.get("exitCode")
            return StageExit(None, detail=f"its pod was deleted while it ran (exit code {code})")
        if terminated:
            code = int(terminated.get("exitCode", 1))
            if terminated.get("reason") == "OOMKilled":
                return StageExit(code, signal=9, oom_killed=True, detail=f"OOMKilled: exit code {code} (out of memory)")
            signal = code - 128 if code > 128 else None
            return StageExit(code, signal=signal, detail=f"exit code {code}")
        return StageExit(None, detail=_short(f"the pod failed: {status.get('reason', '')} {status.get('message', '')}"))
    if event == "DELETED":
        return StageExit(None, detail="its pod was deleted before it ended")
    waiting = state.get("waiting") or {}
    if (reason := waiting.get("reason")) in FAIL_FAST_REASONS:
        why = "cannot get its image" if reason != "CreateContainerConfigError" else "cannot create its container"
        detail = f"{_stage(pod)} pod {why} ({_image(pod)}): {reason}: {waiting.get('message', '')}"
        return StageExit(None, detail=_short(detail), not_started=True)
    return None


def unschedulable(pod: Mapping[str, Any]) -> str | None:
    """The scheduler's reason while it cannot place the pod (PodScheduled False, Unschedulable)."""
    if (pod.get("spec") or {}).get("nodeName"):
        return None
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if (condition.get("type"), condition.get("status"), condition.get("reason")) == (
            "PodScheduled",
            "False",
            "Unschedulable",
        ):
            return str(condition.get("message") or "no node fits it")
    return None


def not_scheduled(pod: Mapping[str, Any], why: str) -> StageExit:
    """The stage's exit when the pod stayed unschedulable past the grace."""
    return StageExit(None, detail=_short(f"{_stage(pod)} pod cannot be scheduled: {why}"), not_started=True)


def _stage(pod: Mapping[str, Any]) -> str:
    return str(((pod.get("metadata") or {}).get("labels") or {}).get(STAGE_LABEL, "the"))


def _image(pod: Mapping[str, Any]) -> str:
    """The image as the pod asks for it (a kubelet's message does not always name it)."""
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    return str(containers[0].get("image", "?"))


def termination_message(pod: Mapping[str, Any]) -> str:
    """The container's termination message (its log's tail when it failed: FallbackToLogsOnError)."""
    return str((_container_state(pod).get("terminated") or {}).get("message", ""))


def has_started(pod: Mapping[str, Any]) -> bool:
    """Its container runs or ran: it has a log to follow."""
    state = _container_state(pod)
    return "running" in state or "terminated" in state
