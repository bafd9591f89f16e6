"""What the test kubelet does with a pod: run it for real, or play a failure.

A test picks a scenario per pod with ``kubelet.plan(scenario, name=..., labels=...)``
(the first plan that matches a pod wins; a pod no plan matches is ``Run()``).
Each scenario ends the way a real node would end it, field for field:

``Run()``
    The container's program runs as a local process (containers.py); the
    pod ends Succeeded or Failed with its exit code (reason Completed/Error).
``Exit(code, log)``
    The container "runs", writes ``log``, and exits with ``code``.
``OOMKilled(log)``
    Terminated with reason OOMKilled, exit code 137; the pod Failed.
``Waiting(reason, message)``
    The container never starts: it stays waiting with that reason, the pod
    Pending (``IMAGE_PULL_BACKOFF`` is ErrImagePull, then ImagePullBackOff;
    also InvalidImageName, CreateContainerConfigError). The kubelet sets
    InvalidImageName and CreateContainerConfigError by itself too, for an
    image reference it cannot parse and a missing Secret key.
``Hang(log)``
    Runs until something ends it: the pod's ``activeDeadlineSeconds`` (pod
    Failed, reason DeadlineExceeded), a deletion, a lost node.
``NodeLost(after_s)``
    Runs for ``after_s``, then the node is gone: the pod is Failed with a
    DisruptionTarget condition (DeletionByPodGC) and force-deleted.
``Deleted(after_s)``
    Runs for ``after_s``, then someone deletes the pod (a graceful delete:
    the kubelet stops the container, exit 143, and confirms).
``Unschedulable(message, for_s)``
    Not scheduled: Pending, condition PodScheduled False (reason
    Unschedulable), for ever or (``for_s``) until a node turns up after
    that long, as a cluster autoscaler adds one; then it runs. The kubelet
    does this by itself for a pod whose claim does not exist, that asks for
    more CPU, memory or GPUs than the node has, or whose nodeSelector the
    node's labels do not match, with the scheduler's messages.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Run:
    pass


@dataclass(frozen=True)
class Exit:
    code: int
    log: str = ""
    after_s: float = 0.0


@dataclass(frozen=True)
class OOMKilled:
    log: str = ""
    after_s: float = 0.0


@dataclass(frozen=True)
class Waiting:
    reason: str
    message: str = ""
    before: tuple[str, ...] = ()  # reasons shown first, in turn


IMAGE_PULL_BACKOFF = Waiting(
    "ImagePullBackOff",
    "Back-off pulling image: not found",
    before=("ErrImagePull",),
)


@dataclass(frozen=True)
class Hang:
    log: str = ""


@dataclass(frozen=True)
class NodeLost:
    after_s: float = 0.0


@dataclass(frozen=True)
class Deleted:
    after_s: float = 0.0


@dataclass(frozen=True)
class Unschedulable:
    message: str = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
    for_s: float | None = None  # None: for ever


Scenario = Run | Exit | OOMKilled | Waiting | Hang | NodeLost | Deleted | Unschedulable


@dataclass(frozen=True)
class Plan:
    """Plays ``scenario`` on the pods whose name matches ``name`` (a glob) and that carry ``labels``."""

    scenario: Scenario
    name: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def matches(self, pod: Mapping[str, Any]) -> bool:
        metadata = pod.get("metadata") or {}
        pod_labels = metadata.get("labels") or {}
        return (self.name is None or fnmatch.fnmatchcase(metadata.get("name", ""), self.name)) and all(
            pod_labels.get(key) == value for key, value in self.labels.items()
        )
