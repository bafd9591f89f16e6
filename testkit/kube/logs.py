"""Container logs, shared by the test kubelet (writer) and the emulated API (``pods/log``).

On a real cluster the API server proxies ``pods/log`` to the node's kubelet;
here the kubelet registers each container's log file and the emulator reads
it. A log lives as long as its pod: once the pod is deleted ``pods/log``
answers 404, as a real server does (which is why a backend must copy the
algorithm's log before it removes the pod).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ContainerLog:
    pod_uid: str
    path: Path
    finished: threading.Event = field(default_factory=threading.Event)


class PodLogs:
    """Thread-safe: the kubelet's threads write it, the emulator's loop reads it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logs: dict[tuple[str, str, str], ContainerLog] = {}

    def started(self, namespace: str, pod: str, pod_uid: str, container: str, path: Path) -> ContainerLog:
        log = ContainerLog(pod_uid, path)
        with self._lock:
            self._logs[namespace, pod, container] = log
        return log

    def get(self, namespace: str, pod: str, pod_uid: str, container: str) -> ContainerLog | None:
        with self._lock:
            log = self._logs.get((namespace, pod, container))
        return log if log is not None and log.pod_uid == pod_uid else None

    def forget(self, namespace: str, pod: str, pod_uid: str) -> None:
        """The pod is gone: its logs with it (followers see their stream end)."""
        with self._lock:
            gone = [key for key, log in self._logs.items() if key[:2] == (namespace, pod) and log.pod_uid == pod_uid]
            for key in gone:
                self._logs.pop(key).finished.set()
