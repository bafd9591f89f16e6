"""Internal authentication: a shared service credential as a bearer token,
or mutual TLS when certificates are configured.

OperatorService and EngineService accept calls only with it; the provider and
the operator-service present it. The embedded default keeps one random token
in the data directory, so `c2d up` needs no configuration; a deployment sets
C2D_SERVICE_TOKEN (e.g. from a Kubernetes secret).

With C2D_TLS_CERT, C2D_TLS_KEY and C2D_TLS_CA (PEM files) set, the internal
ports (operator-service, engine) serve TLS and require a client certificate
signed by that CA; the handshake is then the credential, and every internal
client (provider, operator-service, pods) presents its certificate.
The provider's consumer-facing port is not affected.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc

from plumbing import settings, tracing

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")

AUTHORIZATION = "authorization"


def service_token() -> str:
    token = os.environ.get("C2D_SERVICE_TOKEN", "")
    if token:
        return token
    path = settings.data_dir() / "service-token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        candidate = secrets.token_urlsafe(32)
        # O_EXCL: when several services start at once, one token wins.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(candidate)
        except FileExistsError:
            pass
    return Path(path).read_text().strip()


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return ((AUTHORIZATION, f"Bearer {token}"),)


def presented_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    for key, value in metadata or ():
        if key == AUTHORIZATION and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :]
    return ""


def tokens_match(presented: str, expected: str) -> bool:
    return bool(presented) and hmac.compare_digest(presented.encode(), expected.encode())


TLS_VARIABLES = ("C2D_TLS_CERT", "C2D_TLS_KEY", "C2D_TLS_CA")


@dataclass(frozen=True)
class MutualTls:
    cert: bytes
    key: bytes
    ca: bytes

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


def mutual_tls() -> MutualTls | None:
    """The configured certificates, or None when none is configured."""
    paths = {name: os.environ.get(name, "") for name in TLS_VARIABLES}
    if not any(paths.values()):
        return None
    missing = [name for name, path in paths.items() if not path]
    if missing:
        raise ValueError(f"mutual TLS needs {', '.join(TLS_VARIABLES)}; {', '.join(missing)} not set")
    contents = {}
    for name, path in paths.items():
        try:
            contents[name] = Path(path).read_bytes()
        except OSError as exc:
            raise ValueError(f"{name}={path}: cannot read it ({exc.strerror})") from None
    return MutualTls(contents["C2D_TLS_CERT"], contents["C2D_TLS_KEY"], contents["C2D_TLS_CA"])


def internal_channel(address: str, blocking: bool = False) -> Any:
    """A channel to an internal service (asyncio, or blocking when asked):
    mutual TLS when configured, else plaintext. An asyncio channel sends the
    trace context along when tracing is on (plumbing.tracing)."""
    tls = mutual_tls()
    if blocking:
        if tls is None:
            return grpc.insecure_channel(address)
        return grpc.secure_channel(address, tls.channel_credentials())
    interceptors = tracing.client_interceptors() or None
    if tls is None:
        return grpc.aio.insecure_channel(address, interceptors=interceptors)
    return grpc.aio.secure_channel(address, tls.channel_credentials(), interceptors=interceptors)


def internal_port(
    token: str, protected_services: Iterable[str]
) -> tuple[list[grpc.aio.ServerInterceptor], grpc.ServerCredentials | None]:
    """How an internal port is guarded: under mutual TLS, its credentials
    and nothing more (the handshake refuses callers without a certificate
    of our CA); otherwise plaintext and the service-token interceptor."""
    tls = mutual_tls()
    if tls is not None:
        return [], tls.server_credentials()
    return [ServiceTokenInterceptor(token, protected_services)], None


class ServiceTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls to the protected services that lack the service token."""

    def __init__(self, token: str, protected_services: Iterable[str]) -> None:
        self._token = token
        self._prefixes = tuple(f"/{name}/" for name in protected_services)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Request, _Response] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Request, _Response] | None:
        method = handler_call_details.method
        if method.startswith(self._prefixes):
            presented = presented_token(handler_call_details.invocation_metadata)
            if not tokens_match(presented, self._token):
                return _refusal(handler_call_details, await continuation(handler_call_details))
        return await continuation(handler_call_details)


def _refusal(
    _details: grpc.HandlerCallDetails, handler: grpc.RpcMethodHandler[_Request, _Response] | None
) -> grpc.RpcMethodHandler[_Request, _Response]:
    message = "missing or wrong service credential (authorization: Bearer <C2D_SERVICE_TOKEN>)"

    async def unary(request: _Request, context: grpc.aio.ServicerContext[_Request, _Response]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def stream(request: _Request, context: grpc.aio.ServicerContext[_Request, _Response]) -> AsyncIterator[None]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator

    if handler is not None and handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream, handler.request_deserializer, handler.response_serializer)
    return grpc.unary_unary_rpc_method_handler(
        unary,
        handler.request_deserializer if handler else None,
        handler.response_serializer if handler else None,
    )
