"""kmock's KubernetesEmulator with the API semantics a controller depends on.

kmock 0.8 serves objects over real HTTP but keeps them as bare dicts: no
resourceVersion, selectors ignored, every watch replays everything, nothing
ever expires, deletes do not cascade. ``KubernetesApiEmulator`` keeps kmock's
HTTP server, request parsing and recording (``emulator.requests``), reaction
DSL (a test's ``emulator[...] << 500`` still wins over the emulation),
discovery endpoints, ``Status`` error bodies and object history
(``emulator.objects``), and replaces its state handling with:

Objects
    uid, creationTimestamp, generation and one cluster-wide resourceVersion
    counter, bumped by every change. Names, labels and (for built-in kinds)
    the whole object against the 1.30 schema, strict, are checked: 422
    Invalid. Namespaced objects need their namespace to exist (404).
    ``generateName``; Secrets' ``stringData`` folded into ``data``; new pods
    and PVCs start Pending.
Reads
    ``labelSelector`` and ``fieldSelector`` (the fields a real server
    indexes, see selectors.py) on list, watch and deletecollection. A list's
    ``metadata.resourceVersion`` is the current revision.
Watches
    Without resourceVersion (or "0"): ADDED for what exists, then changes.
    From a resourceVersion: every change after it, from a window of the last
    ``history_window`` changes; older than that is an ``ERROR`` event with
    410 Expired, as the client's ``Watch.stream`` expects.
    ``expire_watches()`` forces that for every open watch and every version
    seen so far (what a compaction of the watch cache does). A change that
    moves an object out of (into) a selector is DELETED (ADDED) for that
    watch. ``timeoutSeconds`` ends the stream; with ``allowWatchBookmarks``
    a BOOKMARK carrying the current revision comes just before the end.
Writes
    PUT (replace) and PATCH in the three formats (patches.py; strategic merge
    is refused for custom resources with 415, as a real server does), with
    the optimistic lock: a ``metadata.resourceVersion`` that is not the
    current one is 409 Conflict. A no-op write changes nothing. Status
    subresources: writes to the object keep its status, writes to
    ``/status`` change only the status. A pod's spec is immutable but for
    ``activeDeadlineSeconds``, images and tolerations. ``pods/binding``
    assigns a node.
Deletes
    Finalizers hold an object with its ``deletionTimestamp``. A pod bound to a
    node and not finished is deleted gracefully: it gets a
    deletionTimestamp, and goes once its kubelet deletes it again with grace
    0 (an unbound or finished pod goes at once). The garbage collector, run
    after each change: an object all of whose owners (ownerReferences, by
    uid) are gone is deleted, so deleting a ComputeJob removes everything it
    owns; ``propagationPolicy`` Orphan strips the references instead,
    Foreground removes the dependents first. Pods and custom resources
    answer a delete with the object, other kinds with a ``Status``.
    deletecollection with selectors.
Custom resources
    Creating a CustomResourceDefinition serves its kind: objects are
    validated against, and pruned to, its openAPIV3Schema; its status
    subresource behaves as above.
Logs
    ``pods/log`` (``container``, ``follow``, ``tailLines``, ``limitBytes``)
    answers ``text/plain`` from what the test kubelet registered in
    ``pod_logs`` (logs.py); 400 while the container has not started, 404
    once the pod is gone.
Authorization
    A bearer token from ``tokens`` is authenticated as its service account
    and authorized by the RBAC objects stored (rbac.py): 403 Forbidden
    otherwise, 401 for an unknown token. ``selfsubjectaccessreviews`` answer
    from the same rules. No token: the cluster's administrator.
/version and /version/
    Report 1.30.

Not emulated: ``limit``/``continue`` (lists come whole), field managers and
server-side apply, admission webhooks, quotas, namespace deletion.

All of it runs on the emulator's event loop; ``server.ApiServer`` runs that
loop in its own thread.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import copy
import datetime
import json
import random
import re
import string
import uuid
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs
import kmock

from testkit.kube import patches, rbac, selectors, validation
from testkit.kube.logs import ContainerLog, PodLogs

KUBERNETES_VERSION = {
    "major": "1",
    "minor": "30",
    "gitVersion": "v1.30.0+testkit",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-04-17T00:00:00Z",
    "goVersion": "go1.22.2",
    "compiler": "gc",
    "platform": "linux/amd64",
}
CORE_PODS = kmock.resource("", "v1", "pods")
NAMESPACES = kmock.resource("", "v1", "namespaces")
CRDS = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
ACCESS_REVIEWS = kmock.resource("authorization.k8s.io", "v1", "selfsubjectaccessreviews")
RBAC_GROUP = "rbac.authorization.k8s.io"
FOREGROUND = "foregroundDeletion"
# A pod's spec fields that an update may change (everything else: 422).
MUTABLE_POD_SPEC = ("activeDeadlineSeconds", "tolerations", "containers", "initContainers")
_NAMESPACE_COLLECTION = re.compile(r"/api/v1/namespaces/?")
_TRUE = ("true", "1", "True")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def error(code: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    # details are never empty: kmock fills empty ones with a server traceback
    return kmock.KubernetesError(status=code, reason=reason, message=message, details=details or {"code": code})


def not_found(plural: str, name: str) -> kmock.KubernetesError:
    return error(404, "NotFound", f'{plural} "{name}" not found', name=name, kind=plural)


def conflict(plural: str, name: str) -> kmock.KubernetesError:
    return error(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {plural} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        name=name,
        kind=plural,
    )


def invalid(exc: validation.Invalid) -> kmock.KubernetesError:
    causes = [{"reason": "FieldValueInvalid", "field": field, "message": reason} for field, reason in exc.causes]
    return error(422, "Invalid", str(exc), name=exc.name, kind=exc.kind, causes=causes)


@dataclass(frozen=True)
class Target:
    """What a request's URL addresses."""

    resource: kmock.resource
    info: kmock.ResourceInfo
    namespace: str | None
    name: str | None
    subresource: str | None

    @property
    def plural(self) -> str:
        return str(self.resource.plural)

    @property
    def api_version(self) -> str:
        return f"{self.resource.group}/{self.resource.version}" if self.resource.group else str(self.resource.version)

    @property
    def rbac_resource(self) -> str:
        return f"{self.plural}/{self.subresource}" if self.subresource else self.plural


@dataclass(frozen=True)
class Reply:
    """An answer: a JSON object, bytes, or an async generator of watch events or log chunks (a stream)."""

    body: Any
    status: int = 200
    content_type: str = "application/json"


class _Emulate(Exception):
    """Raised by the emulation's fallback reaction: no reaction of a test took the request."""


@dataclass(frozen=True)
class Change:
    """One entry of the change log that watches read: a new resourceVersion."""

    rv: int
    resource: kmock.resource
    type: str  # ADDED, MODIFIED, DELETED
    old: Mapping[str, Any] | None
    new: Mapping[str, Any]


@dataclass(frozen=True)
class Scope:
    """Which objects a list, watch or deletecollection covers."""

    namespace: str | None
    name: str | None
    labels: selectors.LabelSelector
    fields: selectors.FieldSelector

    def covers(self, obj: Mapping[str, Any] | None) -> bool:
        if obj is None:
            return False
        metadata = obj.get("metadata") or {}
        return (
            (self.namespace is None or metadata.get("namespace") == self.namespace)
            and (self.name is None or metadata.get("name") == self.name)
            and self.labels.matches(metadata.get("labels"))
            and self.fields.matches(obj)
        )


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _owner_uids(obj: Mapping[str, Any]) -> list[str]:
    return [ref.get("uid", "") for ref in _meta(obj).get("ownerReferences") or []]


@attrs.define(kw_only=True)
class KubernetesApiEmulator(kmock.KubernetesEmulator):
    history_window: int = 10_000  # changes a watch can resume from
    strict_schemas: bool = True  # built-in kinds checked against the 1.30 schema on every write
    pod_logs: PodLogs = attrs.field(factory=PodLogs)
    tokens: dict[str, rbac.Identity] = attrs.field(factory=dict)

    _rv: int = attrs.field(default=0, init=False)
    _horizon: int = attrs.field(default=0, init=False)  # watches from before this revision get 410
    _changes: list[Change] = attrs.field(factory=list, init=False)
    _live: dict[kmock.resource, dict[tuple[str | None, str], dict[str, Any]]] = attrs.field(factory=dict, init=False)
    _custom: dict[kmock.resource, validation.CustomResourceSchema] = attrs.field(factory=dict, init=False)
    _state: asyncio.Condition = attrs.field(factory=asyncio.Condition, init=False)
    _gc_pending: bool = attrs.field(default=False, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    _own_reactions: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        # Not KubernetesEmulator's own: its fallbacks change objects before any reaction
        # runs and know no resourceVersion. The scaffold's discovery and errors stay.
        kmock.KubernetesScaffold.__attrs_post_init__(self)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # kmock 0.8 reads it with importlib's read_binary
            self.resources.load_bundled()
        # The emulation answers outside kmock's rendering (which keeps a reaction's last
        # status and headers for its next answer): its reaction only signals that it is due.
        self.fallback[lambda request: self._is_resource_path(request.url.path)] << _Emulate
        self.fallback["get /version/"] << self._serve_server_version
        self._own_reactions = len(self._payloads)

    # -- entry points ------------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if not _NAMESPACE_COLLECTION.fullmatch(raw_request.path):
            return await super().__call__(raw_request)
        # kmock's path parser fails on this one URL (it reads "namespaces" as the start of a
        # namespaced path): it is recorded and served here, past the reactions.
        body = await raw_request.read()
        request = kmock.Request(
            id=len(self._requests),
            method=raw_request.method,
            url=raw_request.url,
            params=dict(raw_request.query),
            headers=dict(raw_request.headers),
            body=body,
            data=await raw_request.json() if body else None,
            raw_request=raw_request,
        )
        self._requests.append(request)
        try:
            return await self._respond(request)
        except kmock.KubernetesError as exc:
            return await self._render_error(exc)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if len(self._payloads) == self._own_reactions and self._is_resource_path(request.url.path):
            # No reaction of a test to consult: kmock's dispatch would match the request against
            # every request recorded so far (quadratic over a benchmark's thousands).
            return await self._respond(request)
        try:
            # The reactions alone: KubernetesEmulator._handle would change its own copy of the objects first.
            return await kmock.RawHandler._handle(self, request)
        except _Emulate:
            return await self._respond(request)

    async def _respond(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        reply = await self._serve(request)
        if not isinstance(reply.body, AsyncGenerator):
            if isinstance(reply.body, bytes):
                return aiohttp.web.Response(body=reply.body, status=reply.status, content_type=reply.content_type)
            return aiohttp.web.json_response(reply.body, status=reply.status)
        response = aiohttp.web.StreamResponse(status=reply.status, headers={"Content-Type": reply.content_type})
        try:
            # kmock keeps the aiohttp request there; the headers go now: a client waits for them before reading
            assert request._raw_request is not None
            await response.prepare(request._raw_request)
            async for item in reply.body:
                await response.write(item if isinstance(item, bytes) else json.dumps(item).encode() + b"\n")
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away
        finally:
            await reply.body.aclose()
        return response

    async def _serve_server_version(self, request: kmock.Request) -> kmock.Payload:
        return dict(KUBERNETES_VERSION)

    @staticmethod
    def _is_resource_path(path: str) -> bool:
        parts = path.strip("/").split("/")
        return (parts[0] == "api" and len(parts) >= 3) or (parts[0] == "apis" and len(parts) >= 4)

    async def _serve(self, request: kmock.Request) -> Reply:
        target = self._target(request.url.path)
        verb = self._verb(request, target)
        self._authorize(request, verb, target)
        if target.resource == ACCESS_REVIEWS and verb == "create":
            return self._review(request)
        params = request.params
        match verb, target.subresource:
            case "list", None:
                return Reply(await self._list(target, self._scope(target, params)))
            case "watch", None:
                return Reply(self._watch(target, self._scope(target, params), params))
            case "get", "log":
                return await self._log(target, params)
            case "get", None | "status":
                return Reply(await self._get(target))
            case "create", None:
                return Reply(await self._create(target, request.data), status=201)
            case "create", "binding" if target.resource == CORE_PODS:
                return Reply(await self._bind(target, request.data), status=201)
            case "update", None | "status":
                return Reply(await self._replace(target, request.data))
            case "patch", None | "status":
                content_type = request.headers.get("Content-Type", patches.MERGE_PATCH)
                return Reply(await self._patch(target, request.data, content_type))
            case "delete", None:
                return Reply(await self._delete(target, params, request.data))
            case "deletecollection", None:
                return Reply(await self._delete_collection(target, params, request.data))
        raise error(405, "MethodNotAllowed", f"{verb} is not supported on {target.rbac_resource}")

    @property
    def requests(self) -> list[kmock.Request]:
        """Every request received so far, in order (kmock's record)."""
        return list(self._requests)

    def describe(self, request: kmock.Request) -> tuple[str, str, str, str | None, str | None] | None:
        """(verb, group, resource[/subresource], namespace, name) of an API request; None for other paths."""
        if not self._is_resource_path(request.url.path):
            return None
        try:
            target = self._target(request.url.path)
            verb = self._verb(request, target)
        except kmock.KubernetesError:
            return None
        return verb, str(target.resource.group), target.rbac_resource, target.namespace, target.name

    def resource_for(self, api_version: str, kind: str) -> kmock.resource:
        group, _, version = api_version.rpartition("/")
        for resource in self.resources:
            if (resource.group, resource.version) == (group, version) and self.resources[resource].kind == kind:
                return resource
        raise error(404, "NotFound", f"no resource serves {kind} in {api_version}")

    async def create_object(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Creates an object as the administrator, without an HTTP request (seeding a test's cluster)."""
        resource = self.resource_for(obj["apiVersion"], obj["kind"])
        info = self.resources[resource]
        namespace = _meta(obj).get("namespace") or ("default" if info.namespaced else None)
        return await self._create(Target(resource, info, namespace, None, None), obj)

    async def shutdown(self) -> None:
        """Ends every open watch and log stream, so the HTTP server can stop at once."""
        async with self._state:
            self._closing = True
            self._state.notify_all()

    # -- parsing -------------------------------------------------------------------------------

    def _target(self, path: str) -> Target:
        parts = path.strip("/").split("/")
        group, version, rest = ("", parts[1], parts[2:]) if parts[0] == "api" else (parts[1], parts[2], parts[3:])
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        plural, name, subresource = (rest + [None, None])[:3]
        resource = kmock.resource(group, version, plural)
        if resource not in self.resources:
            raise error(404, "NotFound", "the server could not find the requested resource", path=path)
        info = self.resources[resource]
        if subresource is not None and subresource not in info.subresources:
            raise error(404, "NotFound", "the server could not find the requested resource", path=path)
        if info.namespaced and namespace is None and name is not None:
            raise error(404, "NotFound", "the server could not find the requested resource", path=path)
        return Target(resource, info, namespace if info.namespaced else None, name, subresource)

    @staticmethod
    def _verb(request: kmock.Request, target: Target) -> str:
        watching = request.params.get("watch") in _TRUE
        named = target.name is not None
        match str(request.method.value):
            case "GET":
                return "watch" if watching else ("get" if named else "list")
            case "POST" if not named or target.subresource:
                return "create"
            case "PUT" if named:
                return "update"
            case "PATCH" if named:
                return "patch"
            case "DELETE":
                return "delete" if named else "deletecollection"
        raise error(405, "MethodNotAllowed", f"{request.method.value} is not allowed on {request.url.path}")

    def _scope(self, target: Target, params: Mapping[str, str]) -> Scope:
        try:
            labels = selectors.LabelSelector.parse(params.get("labelSelector"))
            fields = selectors.FieldSelector.parse(params.get("fieldSelector"), target.plural)
        except selectors.SelectorError as exc:
            raise error(400, "BadRequest", f"unable to parse requirement: {exc}") from None
        return Scope(target.namespace, target.name, labels, fields)

    # -- authorization ---------------------------------------------------------------------------

    def _authorize(self, request: kmock.Request, verb: str, target: Target) -> None:
        header = request.headers.get("Authorization", "")
        if not header:
            return  # the cluster's administrator
        identity = self.tokens.get(header.removeprefix("Bearer ").strip())
        if identity is None:
            raise error(401, "Unauthorized", "Unauthorized")
        if target.resource == ACCESS_REVIEWS:
            return  # every authenticated user may ask what it may do (system:basic-user)
        attributes = rbac.Attributes(
            verb, str(target.resource.group), target.rbac_resource, target.namespace, target.name
        )
        if not self._policy().allows(identity, attributes):
            raise error(403, "Forbidden", attributes.describe(identity), kind=target.plural, name=target.name or "")

    def _policy(self) -> rbac.Policy:
        def objects(plural: str) -> dict[tuple[str | None, str], dict[str, Any]]:
            return self._live.get(kmock.resource(RBAC_GROUP, "v1", plural), {})

        return rbac.Policy(
            roles={(ns or "", name): obj for (ns, name), obj in objects("roles").items()},
            cluster_roles={name: obj for (_, name), obj in objects("clusterroles").items()},
            role_bindings=list(objects("rolebindings").values()),
            cluster_role_bindings=list(objects("clusterrolebindings").values()),
        )

    def _review(self, request: kmock.Request) -> Reply:
        review = copy.deepcopy(request.data or {})
        wanted = (review.get("spec") or {}).get("resourceAttributes") or {}
        identity = self.tokens.get(request.headers.get("Authorization", "").removeprefix("Bearer ").strip())
        allowed = True
        if identity is not None:
            resource = wanted.get("resource", "") + (f"/{wanted['subresource']}" if wanted.get("subresource") else "")
            attributes = rbac.Attributes(
                wanted.get("verb", ""),
                wanted.get("group", ""),
                resource,
                wanted.get("namespace") or None,
                wanted.get("name"),
            )
            allowed = self._policy().allows(identity, attributes)
        review["status"] = {"allowed": allowed} if allowed else {"allowed": False, "reason": "no RBAC rule allows it"}
        return Reply(review, status=201)

    # -- the store ---------------------------------------------------------------------------------

    def _objects_of(self, resource: kmock.resource) -> dict[tuple[str | None, str], dict[str, Any]]:
        return self._live.setdefault(resource, {})

    def _current(self, target: Target) -> dict[str, Any]:
        obj = self._objects_of(target.resource).get((target.namespace, str(target.name)))
        if obj is None:
            raise not_found(target.plural, str(target.name))
        return obj

    def _stamp(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._rv)
        return obj

    def _commit(self, resource: kmock.resource, type_: str, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        """Stores (or, for DELETED, removes) a stamped object and logs the change; under the lock."""
        key = (_meta(new).get("namespace"), _meta(new)["name"])
        history_key = (resource, key[0], key[1])
        if type_ == "DELETED":
            del self._objects_of(resource)[key]
            self._objects[history_key].delete()
            if resource == CORE_PODS:
                self.pod_logs.forget(str(key[0]), key[1], _meta(new).get("uid", ""))
        else:
            self._objects_of(resource)[key] = new
            if history_key in self._objects and not self._objects[history_key].deleted:
                self._objects[history_key].history.append(new)
            elif history_key in self._objects:
                self._objects[history_key].create(new)
            else:
                self._objects[history_key] = new
        self._changes.append(Change(self._rv, resource, type_, old, new))
        if len(self._changes) > 2 * self.history_window:
            dropped = len(self._changes) - self.history_window
            self._horizon = self._changes[dropped - 1].rv
            del self._changes[:dropped]
        self._state.notify_all()
        if self._may_free(type_, old, new):
            self._request_gc()

    @staticmethod
    def _may_free(type_: str, old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
        """Whether the change can leave something for the garbage collector (a status update cannot)."""
        if type_ == "DELETED":
            return True
        fields = ("ownerReferences", "finalizers", "deletionTimestamp")
        return any(_meta(new).get(field) != _meta(old or {}).get(field) for field in fields)

    def expire_watches(self) -> None:
        """Makes every resourceVersion handed out so far too old: open watches end with 410, resuming fails."""
        self._rv += 1
        self._horizon = self._rv
        self._changes.clear()
        self._state.notify_all()

    async def expire_watches_now(self) -> None:
        async with self._state:
            self.expire_watches()

    # -- reads -----------------------------------------------------------------------------------------

    async def _get(self, target: Target) -> dict[str, Any]:
        async with self._state:
            return self._current(target)

    async def _list(self, target: Target, scope: Scope) -> dict[str, Any]:
        async with self._state:
            items = [
                obj
                for _, obj in sorted(
                    self._objects_of(target.resource).items(), key=lambda kv: (kv[0][0] or "", kv[0][1])
                )
                if scope.covers(obj)
            ]
            return {
                "apiVersion": target.api_version,
                "kind": f"{target.info.kind}List",
                "metadata": {"resourceVersion": str(self._rv)},
                "items": items,
            }

    def _event(self, change: Change, target: Target, scope: Scope) -> dict[str, Any] | None:
        if change.resource != target.resource:
            return None
        now_in, was_in = scope.covers(change.new), scope.covers(change.old)
        if change.type == "DELETED":
            return {"type": "DELETED", "object": change.new} if now_in else None
        if now_in:
            return {"type": "MODIFIED" if was_in else "ADDED", "object": change.new}
        return {"type": "DELETED", "object": change.new} if was_in else None

    async def _watch(self, target: Target, scope: Scope, params: Mapping[str, str]) -> AsyncIterator[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        timeout = params.get("timeoutSeconds")
        deadline = loop.time() + float(timeout) if timeout else None
        requested = params.get("resourceVersion", "")
        initial: list[dict[str, Any]] = []
        async with self._state:
            if requested in ("", "0"):
                since = self._rv
                initial = [
                    {"type": "ADDED", "object": obj}
                    for obj in self._objects_of(target.resource).values()
                    if scope.covers(obj)
                ]
            elif not requested.isdigit():
                raise error(400, "BadRequest", f"invalid resource version: {requested!r}")
            else:
                since = int(requested)
        for event in initial:
            yield event
        while True:
            async with self._state:
                while not self._closing and since >= self._horizon and self._last_rv_of_log() <= since:
                    remaining = None if deadline is None else deadline - loop.time()
                    if remaining is not None and remaining <= 0:
                        break
                    try:
                        await asyncio.wait_for(self._state.wait(), remaining)
                    except TimeoutError:
                        break
                if since < self._horizon:
                    expired = self._expired(since)
                    changes: list[Change] = []
                else:
                    expired = None
                    start = bisect.bisect_right(self._changes, since, key=lambda change: change.rv)
                    changes = self._changes[start:]
                current = self._rv
            if expired is not None:
                yield expired
                return
            for change in changes:
                since = change.rv
                if update := self._event(change, target, scope):
                    yield update
            timed_out = deadline is not None and loop.time() >= deadline
            if self._closing or timed_out:
                if timed_out and params.get("allowWatchBookmarks") in _TRUE:
                    since = max(since, current)
                    yield {
                        "type": "BOOKMARK",
                        "object": {
                            "apiVersion": target.api_version,
                            "kind": target.info.kind,
                            "metadata": {"resourceVersion": str(since)},
                        },
                    }
                return

    def _last_rv_of_log(self) -> int:
        return self._changes[-1].rv if self._changes else self._horizon

    def _expired(self, since: int) -> dict[str, Any]:
        return {
            "type": "ERROR",
            "object": {
                "apiVersion": "v1",
                "kind": "Status",
                "metadata": {},
                "status": "Failure",
                "message": f"too old resource version: {since} ({self._horizon})",
                "reason": "Expired",
                "code": 410,
            },
        }

    async def _log(self, target: Target, params: Mapping[str, str]) -> Reply:
        async with self._state:
            pod = self._current(target)
        containers = [c["name"] for c in pod["spec"].get("containers", [])]
        container = params.get("container") or (containers[0] if len(containers) == 1 else None)
        if container is None:
            raise error(
                400,
                "BadRequest",
                f"a container name must be specified for pod {target.name}, choose one of: {containers}",
            )
        if container not in containers:
            raise error(400, "BadRequest", f"container {container} is not valid for pod {target.name}")
        log = self.pod_logs.get(str(target.namespace), str(target.name), _meta(pod).get("uid", ""), container)
        if log is None:
            raise error(
                400,
                "BadRequest",
                f'container "{container}" in pod "{target.name}" is waiting to start: ContainerCreating',
            )
        text = log.path.read_bytes()
        if "tailLines" in params:
            lines = text.splitlines(keepends=True)
            text = b"".join(lines[len(lines) - int(params["tailLines"]) :]) if int(params["tailLines"]) else b""
        limit = int(params["limitBytes"]) if "limitBytes" in params else None
        if params.get("follow") not in _TRUE:
            return Reply(text[:limit], content_type="text/plain")
        return Reply(self._follow(log, text, log.path.stat().st_size, limit), content_type="text/plain")

    async def _follow(self, log: ContainerLog, first: bytes, offset: int, limit: int | None) -> AsyncIterator[bytes]:
        sent = 0
        chunk = first
        with log.path.open("rb") as stream:
            stream.seek(offset)
            while True:
                if limit is not None:
                    chunk = chunk[: limit - sent]
                yield chunk
                sent += len(chunk)
                if limit is not None and sent >= limit:
                    return
                finished = log.finished.is_set() or self._closing
                chunk = stream.read()
                if not chunk:
                    if finished:
                        return
                    await asyncio.sleep(0.05)  # the kubelet's file grows from another thread

    # -- writes ----------------------------------------------------------------------------------------

    def _require_namespace(self, target: Target) -> None:
        if target.namespace is not None and (None, target.namespace) not in self._objects_of(NAMESPACES):
            raise not_found("namespaces", target.namespace)

    def _check(self, target: Target, obj: dict[str, Any]) -> dict[str, Any]:
        try:
            validation.check_metadata(obj, target.plural, str(target.info.kind))
            if target.resource in self._custom:
                return self._custom[target.resource].validate(obj)
            if self.strict_schemas:
                validation.check_schema(obj)
        except validation.Invalid as exc:
            raise invalid(exc) from None
        return obj

    def _has_status(self, target: Target) -> bool:
        return "status" in target.info.subresources

    async def _create(self, target: Target, body: Any) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise error(400, "BadRequest", "the request body is not a JSON object")
        obj = copy.deepcopy(dict(body))
        metadata = obj.setdefault("metadata", {})
        if target.info.namespaced and not target.namespace:
            raise error(404, "NotFound", "the server could not find the requested resource")
        if target.namespace and metadata.get("namespace", target.namespace) != target.namespace:
            raise error(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        for field, expected in (("apiVersion", target.api_version), ("kind", target.info.kind)):
            if obj.setdefault(field, expected) != expected:
                raise error(400, "BadRequest", f"{field} {obj[field]!r} does not match the URL's {expected!r}")
        if target.namespace:
            metadata["namespace"] = target.namespace
        else:
            metadata.pop("namespace", None)
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + "".join(
                random.choices(string.ascii_lowercase + string.digits, k=5)
            )
        for field in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
            metadata.pop(field, None)
        metadata.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        self._default(target, obj)
        obj = self._check(target, obj)
        async with self._state:
            self._require_namespace(target)
            if (target.namespace, metadata["name"]) in self._objects_of(target.resource):
                raise error(
                    409,
                    "AlreadyExists",
                    f'{target.plural} "{metadata["name"]}" already exists',
                    name=metadata["name"],
                    kind=target.plural,
                )
            self._commit(target.resource, "ADDED", None, self._stamp(obj))
            if target.resource == CRDS:
                self.serve_custom_resource(obj)
        return obj

    def _default(self, target: Target, obj: dict[str, Any]) -> None:
        """What the real server sets on a new object of these kinds."""
        if target.resource in self._custom and self._has_status(target):
            obj.pop("status", None)
        elif target.resource == CORE_PODS:
            spec = obj.setdefault("spec", {})
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            obj["status"] = {"phase": "Pending"}
        elif target.resource == kmock.resource("", "v1", "persistentvolumeclaims"):
            obj["status"] = {"phase": "Pending"}
        elif target.resource == NAMESPACES:
            obj["status"] = {"phase": "Active"}
        elif target.resource == kmock.resource("", "v1", "secrets"):
            obj.setdefault("type", "Opaque")
            for key, value in (obj.pop("stringData", None) or {}).items():
                obj.setdefault("data", {})[key] = base64.b64encode(str(value).encode()).decode()

    def serve_custom_resource(self, crd: Mapping[str, Any]) -> None:
        """Serves the kinds a CustomResourceDefinition declares (done when one is created)."""
        for schema in validation.CustomResourceSchema.from_crd(crd):
            resource = kmock.resource(schema.group, schema.version, schema.plural)
            self._custom[resource] = schema
            self.resources[resource] = kmock.ResourceInfo(
                kind=schema.kind,
                namespaced=schema.namespaced,
                verbs={"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"},
                subresources={"status"} if schema.has_status else set(),
            )

    async def _replace(self, target: Target, body: Any) -> dict[str, Any]:
        if not isinstance(body, Mapping) or _meta(body).get("name") != target.name:
            raise error(400, "BadRequest", "the name of the object does not match the name on the URL")
        async with self._state:
            return self._update(target, self._current(target), copy.deepcopy(dict(body)))

    async def _patch(self, target: Target, body: Any, content_type: str) -> dict[str, Any]:
        async with self._state:
            old = self._current(target)
            try:
                proposed = patches.apply(old, body, content_type, custom=target.resource in self._custom)
            except LookupError as exc:
                raise error(415, "UnsupportedMediaType", str(exc)) from None
            except patches.PatchError as exc:
                raise error(422, "Invalid", str(exc), name=str(target.name), kind=target.plural) from None
            return self._update(target, old, proposed)

    def _update(self, target: Target, old: dict[str, Any], proposed: dict[str, Any]) -> dict[str, Any]:
        """Settles a proposed new state of an object and commits it; under the lock."""
        wanted_rv = _meta(proposed).get("resourceVersion")
        if wanted_rv and wanted_rv != _meta(old)["resourceVersion"]:
            raise conflict(target.plural, str(target.name))
        if target.subresource == "status":
            new = copy.deepcopy(old)
            new["status"] = proposed.get("status")
            if new["status"] is None:
                new.pop("status")
        else:
            new = proposed
            if self._has_status(target):
                new.pop("status", None)
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
        metadata = new.setdefault("metadata", {})
        for field in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            if field in old["metadata"]:
                metadata[field] = old["metadata"][field]
            else:
                metadata.pop(field, None)
        new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
        if target.resource == CORE_PODS:
            self._check_pod_spec_change(old, new)
        if new.get("spec") != old.get("spec"):
            metadata["generation"] = old["metadata"].get("generation", 1) + 1
        metadata["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return old  # a no-op write changes nothing, not even the resourceVersion
        new = self._check(target, new)
        if self._removable(new):
            return self._remove(target, old, new)
        self._commit(target.resource, "MODIFIED", old, self._stamp(new))
        return new

    @staticmethod
    def _check_pod_spec_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        def fixed(spec: Mapping[str, Any]) -> dict[str, Any]:
            kept = {key: value for key, value in spec.items() if key not in MUTABLE_POD_SPEC}
            for field in ("containers", "initContainers"):
                kept[field] = [{k: v for k, v in c.items() if k != "image"} for c in spec.get(field) or []]
            return kept

        if fixed(old.get("spec") or {}) != fixed(new.get("spec") or {}):
            name = _meta(old)["name"]
            raise error(
                422,
                "Invalid",
                f'Pod "{name}" is invalid: spec: Forbidden: pod updates may not change fields other than '
                "`spec.containers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations`",
                name=name,
                kind="pods",
            )

    async def _bind(self, target: Target, body: Any) -> dict[str, Any]:
        node = ((body or {}).get("target") or {}).get("name")
        if not node:
            raise error(422, "Invalid", "a binding needs target.name", name=str(target.name), kind="pods")
        async with self._state:
            old = self._current(target)
            if old["spec"].get("nodeName"):
                raise error(
                    409, "Conflict", f"pod {target.name} is already assigned to node {old['spec']['nodeName']!r}"
                )
            new = copy.deepcopy(old)
            new["spec"]["nodeName"] = node
            scheduled = {"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}
            new.setdefault("status", {})["conditions"] = [
                c for c in new["status"].get("conditions", []) if c.get("type") != "PodScheduled"
            ] + [scheduled]
            self._commit(target.resource, "MODIFIED", old, self._stamp(new))
        return {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success", "code": 201}

    # -- deletes -----------------------------------------------------------------------------------------

    @staticmethod
    def _options(params: Mapping[str, str], body: Any) -> tuple[str, int | None, Mapping[str, Any]]:
        options = body if isinstance(body, Mapping) else {}
        policy = params.get("propagationPolicy") or options.get("propagationPolicy") or "Background"
        if policy not in ("Background", "Foreground", "Orphan"):
            raise error(400, "BadRequest", f"unknown propagationPolicy {policy!r}")
        grace = params.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
        return policy, None if grace is None else int(grace), options.get("preconditions") or {}

    def _graceful(self, target: Target, obj: Mapping[str, Any]) -> bool:
        """A pod on a node that has not finished: its kubelet must stop it first."""
        return (
            target.resource == CORE_PODS
            and bool(obj["spec"].get("nodeName"))
            and (obj.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        )

    @staticmethod
    def _removable(obj: Mapping[str, Any]) -> bool:
        """Marked for deletion, no finalizer left, and no grace period (a kubelet confirms a pod's with 0)."""
        metadata = _meta(obj)
        return (
            bool(metadata.get("deletionTimestamp"))
            and not metadata.get("finalizers")
            and not metadata.get("deletionGracePeriodSeconds")
        )

    def _remove(self, target: Target, old: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
        gone = self._stamp(copy.deepcopy(last))
        self._commit(target.resource, "DELETED", old, gone)
        return gone

    async def _delete(self, target: Target, params: Mapping[str, str], body: Any) -> dict[str, Any]:
        policy, grace, preconditions = self._options(params, body)
        async with self._state:
            old = self._current(target)
            for field in ("uid", "resourceVersion"):
                if preconditions.get(field) and preconditions[field] != old["metadata"][field]:
                    raise error(
                        409,
                        "Conflict",
                        f"Precondition failed: {field} in precondition: {preconditions[field]}, "
                        f"{field} in object meta: {old['metadata'][field]}",
                    )
            result = self._delete_object(target, old, policy, grace)
            removed = (target.namespace, str(target.name)) not in self._objects_of(target.resource)
        # what a real server answers: the object while it waits (grace, finalizers), and for pods and
        # custom resources always; a Status for the other kinds once they are gone
        if target.resource == CORE_PODS or target.resource in self._custom or not removed:
            return result
        return {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Success",
            "details": {"name": target.name, "kind": target.plural, "uid": old["metadata"]["uid"]},
        }

    def _delete_object(self, target: Target, old: dict[str, Any], policy: str, grace: int | None) -> dict[str, Any]:
        """Deletes now, or marks for deletion; under the lock."""
        uid = old["metadata"]["uid"]
        if policy == "Orphan":
            for resource, objects in self._live.items():
                for dependent in [obj for obj in objects.values() if uid in _owner_uids(obj)]:
                    stripped = copy.deepcopy(dependent)
                    references = [r for r in dependent["metadata"]["ownerReferences"] if r.get("uid") != uid]
                    if references:
                        stripped["metadata"]["ownerReferences"] = references
                    else:
                        del stripped["metadata"]["ownerReferences"]
                    self._commit(resource, "MODIFIED", dependent, self._stamp(stripped))
        new = copy.deepcopy(old)
        metadata = new["metadata"]
        if policy == "Foreground" and any(uid in _owner_uids(obj) for obj in self._all_live()):
            metadata["finalizers"] = list(dict.fromkeys([*metadata.get("finalizers", []), FOREGROUND]))
        if self._graceful(target, old):
            grace = grace if grace is not None else old["spec"].get("terminationGracePeriodSeconds", 30)
        else:
            grace = 0
        if metadata.get("deletionTimestamp"):
            metadata["deletionGracePeriodSeconds"] = min(grace, metadata.get("deletionGracePeriodSeconds", grace))
        else:
            when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=grace)
            metadata["deletionTimestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
            metadata["deletionGracePeriodSeconds"] = grace
        if self._removable(new):
            return self._remove(target, old, new)
        if new != old:
            self._commit(target.resource, "MODIFIED", old, self._stamp(new))
        return new

    async def _delete_collection(self, target: Target, params: Mapping[str, str], body: Any) -> dict[str, Any]:
        policy, grace, _ = self._options(params, body)
        scope = self._scope(target, params)
        async with self._state:
            doomed = [obj for obj in self._objects_of(target.resource).values() if scope.covers(obj)]
            for obj in doomed:
                named = Target(target.resource, target.info, _meta(obj).get("namespace"), _meta(obj)["name"], None)
                self._delete_object(named, obj, policy, grace)
            return {
                "apiVersion": target.api_version,
                "kind": f"{target.info.kind}List",
                "metadata": {"resourceVersion": str(self._rv)},
                "items": doomed,
            }

    # -- the garbage collector -----------------------------------------------------------------------------

    def _all_live(self) -> Iterator[dict[str, Any]]:
        for objects in self._live.values():
            yield from objects.values()

    def _request_gc(self) -> None:
        if not self._gc_pending:
            self._gc_pending = True
            asyncio.get_running_loop().create_task(self._collect_garbage())

    async def _collect_garbage(self) -> None:
        """Deletes what all of whose owners are gone, and finishes foreground deletions."""
        async with self._state:
            self._gc_pending = False
            progress = True
            while progress:
                progress = False
                by_uid = {obj["metadata"]["uid"]: obj for obj in self._all_live()}
                for resource, objects in list(self._live.items()):
                    info = self.resources[resource]
                    for (namespace, name), obj in list(objects.items()):
                        target = Target(resource, info, namespace, name, None)
                        owners = [by_uid.get(uid) for uid in _owner_uids(obj)]
                        orphaned = owners and all(
                            owner is None or FOREGROUND in _meta(owner).get("finalizers", []) for owner in owners
                        )
                        if orphaned and not _meta(obj).get("deletionTimestamp"):
                            self._delete_object(target, obj, "Background", None)
                            progress = True
                        elif FOREGROUND in _meta(obj).get("finalizers", []) and not any(
                            obj["metadata"]["uid"] in _owner_uids(other) for other in by_uid.values()
                        ):
                            released = copy.deepcopy(obj)
                            released["metadata"]["finalizers"] = [
                                f for f in obj["metadata"]["finalizers"] if f != FOREGROUND
                            ]
                            if self._removable(released):
                                self._remove(target, obj, released)
                            else:
                                self._commit(resource, "MODIFIED", obj, self._stamp(released))
                            progress = True
                    if progress:
                        break
