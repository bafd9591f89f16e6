"""Every RPC of every service, fuzzed over real gRPC against a running stack
(testkit/fuzz/harness.py says what fails a call). C2D_FUZZ_PROFILE=ci (the
default: a few examples per RPC) or long; failures shrink, and replay from
.hypothesis/ on the next run. Each bug the fuzzer found is pinned below as an
@example of the RPC it was found on."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import message_factory

from c2d.provider.v1 import asset_pb2, provider_pb2
from plumbing.grpc_errors import bad_request_fields, error_code
from testkit.fuzz.harness import JOB_AGENT, Case, FuzzStack, all_rpcs, fuzz, running_stack
from testkit.fuzz.regressions import REGRESSIONS

RPCS = all_rpcs()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzStack]:
    with running_stack(tmp_path_factory.mktemp("fuzz") / "c2d") as running:
        yield running


def test_the_fuzzer_knows_every_service_and_every_server_serves_one(stack):
    services = {rpc.service for rpc in RPCS}
    assert {"c2d.provider.v1.ProviderService", "c2d.operator.v1.OperatorService", JOB_AGENT} <= services
    assert set(stack.served_by) == services, f"served: {stack.served_by}, generated: {services}"
    assert len(RPCS) >= 40


@pytest.mark.parametrize("rpc", RPCS, ids=lambda rpc: rpc.name)
def test_fuzzed_requests_get_a_client_error_never_a_crash(stack, rpc):
    fuzz(stack, rpc, REGRESSIONS.get(rpc.name, []))


@pytest.mark.parametrize(
    "rpc", [rpc for rpc in RPCS if not rpc.service.startswith("c2d.provider.")], ids=lambda r: r.name
)
def test_internal_rpcs_refuse_a_caller_without_credentials(stack, rpc):
    """Without a credential, or with a wrong one, and a request that names a real job."""
    request = message_factory.GetMessageClass(rpc.method.input_type)()
    if "job_id" in request.DESCRIPTOR.fields_by_name:
        request.job_id = stack.known.job_ids[0]
    for credential in ("none", "wrong"):
        case = Case(request=request, credential=credential)
        code, _ = stack._send(
            stack.channels[stack.served_by[rpc.service]],
            rpc,
            stack.payload(rpc, case, ""),
            stack.credentials(rpc, case, ""),
            "drain",
        )
        assert code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), (credential, code)


def _answer(stack: FuzzStack, name: str, case: Case) -> tuple[grpc.StatusCode, str, str, list[str]]:
    rpc = next(rpc for rpc in RPCS if rpc.name == name)
    held_id, held_token = stack.held_job() if rpc.service == JOB_AGENT else ("", "")
    call = stack.channels[stack.served_by[rpc.service]].unary_unary(
        rpc.path, request_serializer=None, response_deserializer=None
    )
    with pytest.raises(grpc.RpcError) as refused:
        call(stack.payload(rpc, case, held_id), metadata=stack.credentials(rpc, case, held_token), timeout=30)
    error = refused.value
    return error.code(), error.details(), error_code(error), bad_request_fields(error)  # type: ignore[attr-defined]


def test_text_with_a_nul_is_refused_naming_its_field(stack):
    request = REGRESSIONS["AssetService/ListAssets"][1]
    code, message, reason, fields = _answer(stack, "AssetService/ListAssets", request)
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "TEXT_HAS_NUL", ["owner"]), message
    assert "owner holds a NUL character" in message and "ListAssets" in message
    nested = Case(provider_pb2.InitializeComputeRequest(spec=provider_pb2.ComputeSpec(viewers=["0x1", "a\x00"])))
    code, message, reason, fields = _answer(stack, "ProviderService/InitializeCompute", nested)
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "TEXT_HAS_NUL", ["spec.viewers[1]"]), message


def test_a_manifest_with_an_impossible_time_is_refused_naming_the_results(stack):
    code, message, reason, fields = _answer(
        stack, "JobAgentService/ReportResults", REGRESSIONS["JobAgentService/ReportResults"][0]
    )
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "RESULTS_INVALID", ["results"]), message
    assert "published_at" in message


def test_a_refusal_that_quotes_a_huge_value_still_reaches_the_client_whole(stack):
    """The operator-service's refusal quoted a 5000-character job id: its status outgrew the trailers a
    client accepts. Now the provider passes on INVALID_ARGUMENT with a message cut to size."""
    code, message, reason, fields = _answer(
        stack, "ProviderService/GetJobDetails", REGRESSIONS["ProviderService/GetJobDetails"][0]
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and reason == "JOB_ID_INVALID" and fields == ["job_id"], message
    assert "cut)" in message and len(message.encode()) <= 600


def test_a_ddo_whose_text_escapes_a_nul_is_refused_naming_the_ddo(stack):
    """Found by the fuzzer's JSON mutations: a DDO whose metadata.name is "a\\u0000b" reached PostgreSQL
    and was answered INTERNAL."""
    seed = stack.known.seeds["c2d.provider.v1.UpdateAssetRequest"][0]
    ddo = json.loads(seed.ddo_json)
    ddo["metadata"]["name"] = "a\x00b"
    update = asset_pb2.UpdateAssetRequest(did=seed.did, ddo_json=json.dumps(ddo))
    code, message, reason, fields = _answer(stack, "AssetService/UpdateAsset", Case(update, signer="publisher"))
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "TEXT_HAS_NUL", ["ddo_json"]), message
    assert "\\u0000" in message
