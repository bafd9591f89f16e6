"""The emulated API server on a local port, on its own event loop in its own thread.

The official client is blocking: a call made on the emulator's own loop would
wait for an answer that loop can never give. So the emulator gets a thread::

    with ApiServer() as api:                      # 127.0.0.1, a free port
        v1 = kubernetes.client.CoreV1Api(api.api_client())
        v1.create_namespaced_pod("c2d", {...})
        api.calls()                               # what was asked, by verb and resource
        api.expire_watches()                      # every open watch: 410 Gone

At start it holds the namespaces ``default`` and ``c2d``, a StorageClass
``standard``, and serves the kinds of the CRDs given (by default the
ComputeJob CRD of deploy/base). ``api.apply(objects)`` creates more as the
administrator, without an API call being recorded (RBAC objects, nodes...).
``api.token_for("c2d", "c2d-operator-engine")`` issues a bearer token whose
requests the stored RBAC objects authorize (``api_client(token=...)``, or
``write_kubeconfig(path, token)`` for a program that takes a kubeconfig).

``api.emulator`` is the KubernetesApiEmulator (emulator.py); touch it only
through ``api.run(fn)``, which calls ``fn(emulator)`` on its loop (e.g. to
add a kmock reaction that makes the next pod creation fail).
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import kmock
import kubernetes.client
import yaml

from testkit.kube import manifests, rbac
from testkit.kube.emulator import KubernetesApiEmulator
from testkit.kube.logs import PodLogs

T = TypeVar("T")


@dataclass(frozen=True)
class ApiCall:
    """One request the API server answered, in RBAC's terms."""

    verb: str  # get list watch create update patch delete deletecollection
    group: str
    resource: str  # "pods", "pods/status", "pods/log", "computejobs"...
    namespace: str | None
    name: str | None
    user_agent: str


def count(calls: Iterable[ApiCall]) -> collections.Counter[tuple[str, str]]:
    """Calls by (verb, resource), e.g. ``count(api.calls())["create", "pods"]``."""
    return collections.Counter((call.verb, call.resource) for call in calls)


class ApiServer:
    def __init__(
        self,
        *,
        namespaces: Iterable[str] = ("default", "c2d"),
        storage_classes: Iterable[str] = ("standard",),
        crds: Iterable[Path] = (manifests.COMPUTEJOB_CRD,),
        history_window: int = 10_000,
        strict_schemas: bool = True,
    ):
        self._seed: list[dict[str, Any]] = [
            *({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}} for name in namespaces),
            *(
                {
                    "apiVersion": "storage.k8s.io/v1",
                    "kind": "StorageClass",
                    "metadata": {"name": name},
                    "provisioner": "testkit.c2d.dev/local-directory",
                    "volumeBindingMode": "WaitForFirstConsumer",
                }
                for name in storage_classes
            ),
            *(doc for path in crds for doc in manifests.load(path)),
        ]
        self._history_window, self._strict_schemas = history_window, strict_schemas
        self.pod_logs = PodLogs()
        self.url = ""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._emulator: KubernetesApiEmulator | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> ApiServer:
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="kube-api", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._failure is not None or not self.url:
            raise RuntimeError("the emulated API server did not start") from self._failure
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(30)

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _main(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            emulator = KubernetesApiEmulator(
                pod_logs=self.pod_logs, history_window=self._history_window, strict_schemas=self._strict_schemas
            )
            async with emulator, kmock.Server(emulator, host="127.0.0.1") as server:
                for obj in self._seed:
                    await emulator.create_object(obj)
                self._emulator = emulator
                self.url = f"http://{server.host}:{server.port}"
                self._ready.set()
                await self._stopping.wait()
                await emulator.shutdown()
        except BaseException as exc:
            self._failure = exc
            raise
        finally:
            self._ready.set()

    # -- on the emulator's loop ------------------------------------------------------------------

    @property
    def emulator(self) -> KubernetesApiEmulator:
        if self._emulator is None:
            raise RuntimeError("the API server is not running")
        return self._emulator

    def run(self, fn: Callable[[KubernetesApiEmulator], T]) -> T:
        """Calls fn(emulator) on the emulator's loop and returns what it returns."""

        async def call() -> T:
            return fn(self.emulator)

        return self.run_async(call())

    def run_async(self, coroutine: Awaitable[T]) -> T:
        if self._loop is None:
            raise RuntimeError("the API server is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)  # type: ignore[arg-type]

    def apply(self, objects: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Creates the objects as the administrator (not recorded as API calls)."""
        return [self.run_async(self.emulator.create_object(obj)) for obj in objects]

    def expire_watches(self) -> None:
        """Every open watch ends with 410 Gone and every resourceVersion seen so far is too old."""
        self.run_async(self.emulator.expire_watches_now())

    def token_for(self, namespace: str, service_account: str) -> str:
        token = f"testkit-{namespace}-{service_account}"
        identity = rbac.Identity.service_account(namespace, service_account)
        self.run(lambda emulator: emulator.tokens.__setitem__(token, identity))
        return token

    # -- clients -----------------------------------------------------------------------------------

    def configuration(self, token: str | None = None) -> kubernetes.client.Configuration:
        configuration = kubernetes.client.Configuration(host=self.url)
        configuration.connection_pool_maxsize = 32
        if token:
            configuration.api_key = {"BearerToken": token}
            configuration.api_key_prefix = {"BearerToken": "Bearer"}
        return configuration

    def write_kubeconfig(self, path: Path, token: str | None = None, namespace: str = "c2d") -> Path:
        """A kubeconfig for this server (and token), for a program configured with a kubeconfig path."""
        user: dict[str, Any] = {"token": token} if token else {}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "testkit", "cluster": {"server": self.url}}],
            "users": [{"name": "testkit", "user": user}],
            "contexts": [
                {"name": "testkit", "context": {"cluster": "testkit", "user": "testkit", "namespace": namespace}}
            ],
            "current-context": "testkit",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def api_client(self, token: str | None = None, user_agent: str | None = None) -> kubernetes.client.ApiClient:
        client = kubernetes.client.ApiClient(self.configuration(token))
        if user_agent:
            client.user_agent = user_agent
        return client

    # -- what was asked ------------------------------------------------------------------------------

    def mark(self) -> int:
        """A position in the record of requests, for ``calls(since=...)``."""
        return len(self.emulator.requests)

    def calls(self, since: int = 0, *, user_agent: str | None = None) -> list[ApiCall]:
        """The API calls answered since a mark, optionally only those of one client (by User-Agent prefix)."""
        calls = []
        for request in self.emulator.requests[since:]:
            described = self.emulator.describe(request)
            agent = request.headers.get("User-Agent", "")
            if described is not None and (user_agent is None or agent.startswith(user_agent)):
                calls.append(ApiCall(*described, user_agent=agent))
        return calls
