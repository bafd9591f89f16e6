"""Mutual TLS between the internal services: with C2D_TLS_* configured the
operator-service and the engine speak only TLS, accept only clients holding a
certificate of the configured CA, and need no service token; a job runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest

from c2d.operator.v1 import operator_pb2, operator_pb2_grpc
from plumbing import auth
from testkit.control_plane import control_plane, wait_finished


def issue(directory: Path, name: str, ca: str | None = None) -> tuple[Path, Path]:
    """A P-256 key and certificate for 127.0.0.1, signed by `ca` (else self-signed)."""
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key)]
    if ca is None:
        subprocess.run(
            ["openssl", "req", "-x509", *curve, "-out", str(cert), "-days", "1", "-subj", f"/CN={name}"],
            check=True,
            capture_output=True,
        )
        return key, cert
    request = directory / f"{name}.csr"
    extensions = directory / f"{name}.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
    subprocess.run(
        ["openssl", "req", *curve, "-out", str(request), "-subj", f"/CN={name}"], check=True, capture_output=True
    )
    subprocess.run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            str(request),
            "-CA",
            str(directory / f"{ca}.pem"),
            "-CAkey",
            str(directory / f"{ca}.key"),
            "-CAcreateserial",
            "-out",
            str(cert),
            "-days",
            "1",
            "-extfile",
            str(extensions),
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


@pytest.fixture
def certificates(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    issue(tmp_path, "ca")
    key, cert = issue(tmp_path, "internal", ca="ca")
    issue(tmp_path, "other-ca")
    issue(tmp_path, "stranger", ca="other-ca")
    monkeypatch.setenv("C2D_TLS_CERT", str(cert))
    monkeypatch.setenv("C2D_TLS_KEY", str(key))
    monkeypatch.setenv("C2D_TLS_CA", str(tmp_path / "ca.pem"))
    return tmp_path


async def list_environments(channel: grpc.aio.Channel) -> None:
    stub = operator_pb2_grpc.OperatorServiceStub(channel)
    await stub.ListEnvironments(operator_pb2.ListEnvironmentsRequest(), timeout=5)


async def test_internal_services_speak_mutual_tls_and_refuse_everyone_else(data_dir, postgres_url, certificates):
    async with control_plane(postgres_url) as plane:  # every internal hop over mutual TLS
        job = await plane.operator.create()
        await wait_finished(plane.operator, [job.job_id])
        address = f"127.0.0.1:{plane.operator.port}"

        # The certificate is the credential: no token needed.
        async with auth.internal_channel(address) as channel:
            await list_environments(channel)

        ca = (certificates / "ca.pem").read_bytes()
        refused = {
            "plaintext": grpc.aio.insecure_channel(address),
            "no client certificate": grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ca)),
            "a certificate of another CA": grpc.aio.secure_channel(
                address,
                grpc.ssl_channel_credentials(
                    ca, (certificates / "stranger.key").read_bytes(), (certificates / "stranger.pem").read_bytes()
                ),
            ),
        }
        for what, channel in refused.items():
            async with channel:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await list_environments(channel)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, what


def test_a_partial_tls_configuration_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("C2D_TLS_CERT", str(tmp_path / "internal.pem"))
    monkeypatch.delenv("C2D_TLS_KEY", raising=False)
    monkeypatch.delenv("C2D_TLS_CA", raising=False)
    with pytest.raises(ValueError, match="C2D_TLS_KEY, C2D_TLS_CA not set"):
        auth.mutual_tls()
    monkeypatch.setenv("C2D_TLS_KEY", str(tmp_path / "missing.key"))
    monkeypatch.setenv("C2D_TLS_CA", str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="C2D_TLS_CERT=.*cannot read it"):
        auth.mutual_tls()
