"""Objects the kube tests create, and a wait on a pod that watches instead of polling."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import kubernetes.client
from kubernetes import watch

Pod = dict[str, Any]


def pod(name: str, command: list[str] | None = None, *, image: str = "busybox:1.36", **spec: Any) -> Pod:
    container: dict[str, Any] = {"name": "main", "image": image}
    if command is not None:
        container["command"] = command
    container.update(spec.pop("container", {}))
    labels = spec.pop("labels", {"app": "test"})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def compute_job(name: str, job_id: str = "job-1") -> dict[str, Any]:
    return {
        "apiVersion": "c2d.dev/v1",
        "kind": "ComputeJob",
        "metadata": {"name": name},
        "spec": {"jobId": job_id, "environmentId": "env-1"},
    }


def wait_for_pod(
    core: kubernetes.client.CoreV1Api,
    name: str,
    until: Callable[[str, Pod], bool],
    *,
    since: str | None = None,
    namespace: str = "c2d",
    timeout: float = 20,
) -> list[tuple[str, Pod]]:
    """The pod's events (type, raw pod) up to the first one ``until`` accepts: from its current state,
    or (to wait for a deletion that may be over already) every change after resourceVersion ``since``."""
    seen: list[tuple[str, Pod]] = []
    version = since
    if version is None:
        listed = json.loads(
            core.list_namespaced_pod(namespace, field_selector=f"metadata.name={name}", _preload_content=False).data
        )
        version = listed["metadata"]["resourceVersion"]
        for item in listed["items"]:
            seen.append(("ADDED", item))
            if until("ADDED", item):
                return seen
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stream = watch.Watch().stream(
            core.list_namespaced_pod,
            namespace,
            field_selector=f"metadata.name={name}",
            resource_version=version,
            timeout_seconds=max(1, int(deadline - time.monotonic())),
            _request_timeout=timeout + 5,
        )
        for event in stream:
            version = event["raw_object"]["metadata"]["resourceVersion"]
            seen.append((event["type"], event["raw_object"]))
            if until(event["type"], event["raw_object"]):
                return seen
    pods = {p.metadata.name: p.status.phase for p in core.list_namespaced_pod(namespace).items}
    raise AssertionError(
        f"pod {name} never got there; its events: {[(t, phase(p)) for t, p in seen]}; pods now: {pods}"
    )


def phase(pod: Pod) -> str:
    return (pod.get("status") or {}).get("phase", "")


def container_state(pod: Pod) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    return statuses[0].get("state") or {}


def finished(type_: str, pod: Pod) -> bool:
    return phase(pod) in ("Succeeded", "Failed")


def waiting_reason(pod: Pod) -> str:
    return (container_state(pod).get("waiting") or {}).get("reason", "")
