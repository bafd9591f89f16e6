"""c2d_sdk: installed alone (without the servers' dependencies) it works against a real `c2d up`;
its async and blocking clients run every step; results are checked against the signed manifest."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from c2d_sdk import AsyncClient, Client, IntegrityError, InvalidDescription, Refused, Signer, results
from tests.cli.conftest import BIN, RunningUp

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("sqlalchemy", "psycopg2-binary", "psycopg2", "minio", "alembic", "kubernetes", "typer", "rich")
ALGORITHM = (
    "import os\nprint('hello from the sdk')\nopen(os.path.join(os.environ['OUTPUTS'], 'out.txt'), 'w').write('42')\n"
)


def uv(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "uv"), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def sdk_python(tmp_path_factory) -> Path:
    """A fresh venv holding c2d_sdk and the lock's versions of its dependencies, nothing else."""
    home = tmp_path_factory.mktemp("sdk")
    lock = home / "pylock.toml"
    exported = uv("export", "--frozen", "--package", "c2d-sdk", "--no-emit-workspace", "--no-dev",
                  "--format", "pylock.toml", "-q", "-o", str(lock))  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert uv("venv", "-q", "--python", sys.executable, str(home / "venv")).returncode == 0
    python = home / "venv" / "bin" / "python"
    for step in (("-r", str(lock)), ("--no-deps", str(ROOT / "sdk" / "python"))):
        # from the uv cache when it has everything; from the registry otherwise
        installed = uv("pip", "install", "--offline", "--python", str(python), *step)
        if installed.returncode != 0:
            installed = uv("pip", "install", "--python", str(python), *step)
        assert installed.returncode == 0, installed.stderr
    return python


def test_the_sdk_installs_without_the_servers_dependencies(sdk_python: Path):
    listed = subprocess.run(
        [str(BIN / "uv"), "pip", "list", "--python", str(sdk_python), "--format", "json"],
        capture_output=True,
        text=True,
    )
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "c2d-sdk" in names and "grpcio" in names
    assert not names & set(SERVER_ONLY), names & set(SERVER_ONLY)
    assert "c2d" not in names  # the servers' package is not there either: the generated code ships with the SDK
    stubs = list((sdk_python.parents[1] / "lib").glob("python3*/site-packages/c2d/provider/v1/provider_pb2.pyi"))
    assert stubs, "the generated type stubs ship too"


def test_the_installed_sdk_runs_a_job_against_c2d_up(sdk_python: Path, up: RunningUp, tmp_path):
    """The README's kind of script, in the SDK-only venv: publish, mint, start, watch, logs, download."""
    (tmp_path / "hello.py").write_text(ALGORITHM)
    (tmp_path / "data.txt").write_text("some data\n")
    script = textwrap.dedent(f"""
        import json
        from pathlib import Path
        from c2d_sdk import Client, ComputeRequest, Signer

        base = Path({str(tmp_path)!r})
        container = {{"entrypoint": "python3 $ALGO", "image": "python", "tag": "3.11", "checksum": "sha256:" + "0" * 64}}
        with Client({up.env["C2D_PROVIDER_ADDRESS"]!r}, Signer.generate()) as c2d:
            algorithm = c2d.publish_asset({{"type": "algorithm", "name": "hello", "files": ["hello.py"],
                                           "container": container}}, base)
            dataset = c2d.publish_asset({{"type": "dataset", "name": "data", "files": ["data.txt"],
                                         "compute": {{"trusted_algorithms": [{{"did": algorithm.did,
                                                      "files_checksum": algorithm.files_checksum}}]}}}}, base)
            for asset in (algorithm, dataset):
                c2d.mint(asset.datatoken, c2d.address, 1)
            job = c2d.start_compute(ComputeRequest(datasets=[dataset.did], algorithm=algorithm.did)).job
            statuses = [j.status for j in c2d.watch(job.job_id)]
            log = b"".join(c2d.logs(job.job_id)).decode()
            files = c2d.download_results(job.job_id, base / "out")
            print(json.dumps({{"statuses": statuses, "log": log,
                              "files": {{f.path: Path(f.saved_to).read_text() for f in files}}}}))
    """)
    ran = subprocess.run([str(sdk_python), "-c", script], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    outcome = json.loads(ran.stdout)
    assert outcome["statuses"][-1] == 70
    assert outcome["log"] == "hello from the sdk\n"
    assert outcome["files"] == {"out.txt": "42", "algorithm.log": "hello from the sdk\n"}


async def test_async_client_refusals_carry_status_reason_and_field(up: RunningUp):
    async with AsyncClient(up.env["C2D_PROVIDER_ADDRESS"], Signer.generate()) as c2d:
        assert (await c2d.provider_info()).encryption_public_key
        assert await c2d.nonce() == 0  # a new account has used none
        with pytest.raises(Refused) as refused:
            await c2d.job("not-a-job-id")
        assert refused.value.code == "INVALID_ARGUMENT" and refused.value.reason == "JOB_ID_INVALID"
        with pytest.raises(Refused) as unknown:
            await c2d.get_asset("did:op:" + "0" * 64)
        assert unknown.value.code == "NOT_FOUND"
        assert await c2d.nonce() > 0  # the signed call spent one


def test_a_description_is_checked_before_anything_is_sent(up: RunningUp, tmp_path):
    with Client(up.env["C2D_PROVIDER_ADDRESS"], Signer.generate()) as c2d:
        with pytest.raises(InvalidDescription) as no_files:
            c2d.publish_asset({"type": "dataset", "name": "x", "files": []}, tmp_path)
        assert no_files.value.field == "files"
        (tmp_path / "blob.bin").write_bytes(b"\xff\xfe\x00binary")
        with pytest.raises(InvalidDescription, match="URL, S3 or IPFS"):
            c2d.publish_asset({"type": "dataset", "name": "x", "files": ["blob.bin"]}, tmp_path)
        with pytest.raises(InvalidDescription, match="files_checksum"):
            c2d.publish_asset(
                {
                    "type": "dataset",
                    "name": "x",
                    "files": ["blob.bin"],
                    "compute": {"trusted_algorithms": ["did:op:1"]},
                },
                tmp_path,
            )


def test_a_tampered_manifest_or_another_key_is_refused():
    from nacl.signing import SigningKey

    key = SigningKey.generate()
    statement = json.dumps(
        {"job_id": "j", "results": {"files": [{"index": 0, "path": "a", "size": "1", "sha256": "ab"}]}}
    )
    signed = results.provider_pb2.SignedResults(
        statement_json=statement,
        signature=key.sign(statement.encode()).signature.hex(),
        public_key=key.verify_key.encode().hex(),
    )
    provider_key = key.verify_key.encode().hex()
    assert [f.path for f in results.verified_manifest(signed, provider_key)] == ["a"]
    tampered = results.provider_pb2.SignedResults()
    tampered.CopyFrom(signed)
    tampered.statement_json = statement.replace('"ab"', '"cd"')
    with pytest.raises(IntegrityError, match="does not verify"):
        results.verified_manifest(tampered, provider_key)
    with pytest.raises(IntegrityError, match="another key"):
        results.verified_manifest(signed, SigningKey.generate().verify_key.encode().hex())
