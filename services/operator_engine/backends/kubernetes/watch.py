"""The engine's one pod watch: every pod it runs, on one label selector.

A thread (the official client blocks) lists once, then watches from the
list's resourceVersion and again from the last version it saw when a watch
ends (timeoutSeconds, and a client-side _request_timeout in case the server
never closes it). A 410 Gone (the version is too old) lists again. Each
event is handed to the engine's event loop: `on_event(type, pod)`, and after
a list `on_list(pods)` with every pod that exists (so a pod deleted while no
watch ran is noticed). Nothing polls: in steady state it makes no list call.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, cast

import kubernetes.client
import urllib3
from kubernetes import watch
from kubernetes.client.rest import ApiException

log = logging.getLogger("c2d.engine.kubernetes")
Pod = dict[str, Any]


def raw(response: object) -> Any:
    """The JSON of an answer read with _preload_content=False (typed as the model it would be)."""
    return cast(Any, response).json()


class PodWatch:
    def __init__(
        self,
        core: kubernetes.client.CoreV1Api,
        namespace: str,
        selector: str,
        timeout_s: int,
        loop: asyncio.AbstractEventLoop,
        on_event: Callable[[str, Pod], None],
        on_list: Callable[[list[Pod], str], None],  # the pods, and the list's resourceVersion
    ) -> None:
        self.core, self.namespace, self.selector, self.timeout_s = core, namespace, selector, timeout_s
        self._loop, self._on_event, self._on_list = loop, on_event, on_list
        self._stopping = threading.Event()
        self.listed = asyncio.Event()
        self.lists = 0
        self.watches = 0
        self._watch: watch.Watch | None = None
        self._thread = threading.Thread(target=self._run, name="k8s-pod-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._watch is not None:
            self._watch.stop()

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        if not self._stopping.is_set():
            self._loop.call_soon_threadsafe(fn, *args)

    def _list(self) -> str:
        listed = raw(
            self.core.list_namespaced_pod(
                self.namespace, label_selector=self.selector, _preload_content=False, _request_timeout=30
            )
        )
        self.lists += 1
        version = str(listed["metadata"]["resourceVersion"])
        self._post(self._on_list, listed["items"], version)
        self._loop.call_soon_threadsafe(self.listed.set)
        return version

    def _run(self) -> None:
        version: str | None = None
        while not self._stopping.is_set():
            try:
                if version is None:
                    version = self._list()
                self._watch = watch.Watch()
                self.watches += 1
                for event in self._watch.stream(
                    self.core.list_namespaced_pod,
                    self.namespace,
                    label_selector=self.selector,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=self.timeout_s,
                    _request_timeout=self.timeout_s + 15,
                ):
                    pod = event["raw_object"]
                    if event["type"] == "ERROR":
                        version = None if pod.get("code") == 410 else version
                        break
                    version = pod["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        self._post(self._on_event, event["type"], pod)
            except ApiException as exc:
                if exc.status == 410:
                    version = None  # too old: list again, then watch from there
                elif not self._stopping.is_set():
                    log.warning("the pod watch failed (%s); watching again", exc.status)
                    self._stopping.wait(0.5)
            except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError):
                pass  # the client's timeout: watch again from the last version
            except Exception:
                if not self._stopping.is_set():
                    log.exception("the pod watch failed; watching again")
                    self._stopping.wait(0.5)
