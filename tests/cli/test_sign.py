"""`c2d sign METHOD JSON` prints a request grpcurl sends as it is, and the provider accepts it once."""

from __future__ import annotations

import json
import subprocess

from tests.cli.conftest import BIN, Cli

GRPCURL = BIN / "grpcurl"


def grpcurl(cli: Cli, rpc: str, request: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(GRPCURL), "-plaintext", "-d", "@", cli.provider, rpc],
        input=request,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_signed_request_goes_through_grpcurl_once(cli: Cli):
    account = cli.json("account", "new")
    signed = cli("sign", "ListJobs", '{"page_size": 5}')
    assert signed.returncode == 0, signed.stderr
    request = json.loads(signed.stdout)
    assert request["page_size"] == 5 and request["signature"]["address"] == account["address"]
    assert int(request["signature"]["nonce"]) > 0 and len(request["signature"]["signature"]) == 132

    answer = grpcurl(cli, "c2d.provider.v1.ProviderService/ListJobs", signed.stdout)
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == {}  # a new account has no jobs

    replay = grpcurl(cli, "c2d.provider.v1.ProviderService/ListJobs", signed.stdout)
    assert replay.returncode != 0 and "PermissionDenied" in replay.stderr and "NONCE_INVALID" in replay.stderr


def test_the_full_method_name_and_a_request_from_stdin(cli: Cli):
    cli("account", "new")
    job_id = "00000000-0000-4000-8000-000000000000"
    signed = cli("sign", "c2d.provider.v1.ProviderService/GetJobDetails", "-", input=json.dumps({"jobId": job_id}))
    assert signed.returncode == 0, signed.stderr
    assert json.loads(signed.stdout)["job_id"] == job_id
    answer = grpcurl(cli, "c2d.provider.v1.ProviderService/GetJobDetails", signed.stdout)
    assert "NotFound" in answer.stderr  # signed right, so the provider looked the job up


def test_an_unsigned_rpc_or_a_wrong_field_is_a_usage_error(cli: Cli):
    not_signed = cli("sign", "GetProviderInfo", "{}")
    assert not_signed.returncode == 2 and "StartCompute" in not_signed.stderr  # it lists those that are
    wrong_field = cli("sign", "GetJobDetails", '{"job": 1}')
    assert wrong_field.returncode == 2 and "GetJobDetailsRequest" in wrong_field.stderr
