"""The TypeScript signer against the provider's own code (services/provider/
domain/identity.py): for fixed keys, nonces and requests it builds the same
message and the same signature, the provider accepts what it signs, and it
recovers the signer of what Python signs."""

from __future__ import annotations

import asyncio
import json

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from c2d.common.v1 import common_pb2
from c2d.provider.v1 import asset_pb2, ledger_pb2, provider_pb2
from plumbing.ethereum import Account
from services.provider.domain import identity
from services.provider.domain.errors import Refusal
from tests.sdk_typescript.node import interop

KEY_A = "0x" + "4c" * 32
KEY_B = "0x" + "0123456789abcdef" * 4
NONCE = 1_767_225_600_000_000  # microseconds, as the clients' nonces are

# One request per shape the canonical form must get right: scalars, a
# oneof, nested messages, repeated enums, 64-bit integers (JSON strings),
# non-ASCII text and JSON inside a string, and nothing but defaults.
CASES: list[tuple[str, str, int, Message]] = [
    ("GetJobDetails", KEY_A, NONCE, provider_pb2.GetJobDetailsRequest(job_id="9a1f0c3e-job")),
    ("GetJobDetails", KEY_A, 1, provider_pb2.GetJobDetailsRequest()),
    (
        "StartCompute",
        KEY_A,
        NONCE + 1,
        provider_pb2.StartComputeRequest(
            spec=provider_pb2.ComputeSpec(
                dataset=provider_pb2.AssetOrder(did="did:op:" + "ab" * 32, service_id="compute", order_id="0x01"),
                additional_datasets=[provider_pb2.AssetOrder(did="did:op:" + "cd" * 32, service_id="compute")],
                algorithm_asset=provider_pb2.AssetOrder(did="did:op:" + "ef" * 32, service_id="access"),
                environment_id="local-cpu",
                algorithm_parameters_json=json.dumps({"city": "Zürich", "window": 24, "note": 'say "hi"\n'}),
                max_duration_seconds=2**40,
                viewers=["0x" + "11" * 20, "0x" + "22" * 20],
                pack_outputs=True,
            )
        ),
    ),
    (
        "InitializeCompute",
        KEY_B,
        NONCE,
        provider_pb2.InitializeComputeRequest(
            spec=provider_pb2.ComputeSpec(
                dataset=provider_pb2.AssetOrder(did="did:op:" + "ab" * 32, service_id="compute"),
                raw_algorithm=provider_pb2.RawAlgorithm(
                    code="print('日本語 ✓')\n",
                    container=common_pb2.AlgorithmContainer(entrypoint="python3 $ALGO", image="python", tag="3.11"),
                ),
                environment_id="local-cpu",
                allow_network=True,
            )
        ),
    ),
    ("WatchJob", KEY_B, NONCE, provider_pb2.WatchJobRequest(job_id="job", after_sequence=18_446_744_073_709_551_615)),
    ("ListJobs", KEY_A, NONCE, provider_pb2.ListJobsRequest(statuses=[70, 41, 1], page_size=50, page_token="t0")),
    ("StreamJobLogs", KEY_A, NONCE, provider_pb2.StreamJobLogsRequest(job_id="job", follow=True, offset=4096)),
    ("GetComputeResult", KEY_B, NONCE, provider_pb2.GetComputeResultRequest(job_id="job", index=3, offset=1)),
    ("StopCompute", KEY_A, NONCE, provider_pb2.StopComputeRequest(job_id="job")),
    ("DeleteCompute", KEY_A, NONCE, provider_pb2.DeleteComputeRequest(job_id="job")),
    ("StartOrder", KEY_B, NONCE, ledger_pb2.StartOrderRequest(did="did:op:" + "ab" * 32, service_id="compute")),
    (
        "Mint",
        KEY_A,
        NONCE,
        ledger_pb2.MintRequest(datatoken_address="0x" + "aa" * 20, to_address="0x" + "bb" * 20, amount=2**63),
    ),
    (
        "PublishAsset",
        KEY_A,
        NONCE,
        asset_pb2.PublishAssetRequest(ddo_json=json.dumps({"metadata": {"name": "Températures"}}), salt="s-1"),
    ),
]

# The worked example of docs/signing.md (its test key, nonce and request),
# as the provider's code signs it: a change to the scheme on either side
# shows up here, even one both sides make together.
WORKED_EXAMPLE = (
    "StartCompute",
    "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318",
    1_733_490_000_000_000,
    provider_pb2.StartComputeRequest(
        spec=provider_pb2.ComputeSpec(
            dataset=provider_pb2.AssetOrder(did="did:op:" + "a1" * 32, service_id="compute", order_id="order-1"),
            algorithm_asset=provider_pb2.AssetOrder(did="did:op:" + "b2" * 32, service_id="access", order_id="order-2"),
            environment_id="local-cpu",
            algorithm_parameters_json='{"city":"Zürich"}',
            max_duration_seconds=600,
        )
    ),
)
CASES.append(WORKED_EXAMPLE)
PINNED = {
    "address": "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23",
    "message": "c2d:v1:StartCompute:1733490000000000:"
    '{"spec":{"algorithm_asset":{"did":"did:op:b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2",'
    '"order_id":"order-2","service_id":"access"},"algorithm_parameters_json":"{\\"city\\":\\"Zürich\\"}",'
    '"dataset":{"did":"did:op:a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1",'
    '"order_id":"order-1","service_id":"compute"},"environment_id":"local-cpu","max_duration_seconds":"600"}}',
    "signature": "0xf0758fdc44db75f3b91c956d567ca5d4842aadce05f335c86de6d42da139c60d"
    "010418e0ee849c2d4817f4204362b2673dcb9fffc3752ec4fed626cb82a3c4b31b",
}


def sign_question(method: str, key: str, nonce: int, request: Message) -> dict:
    return {
        "op": "sign",
        "privateKey": key,
        "method": method,
        "nonce": str(nonce),
        "request": json_format.MessageToDict(request),
    }


def ask(*questions: dict) -> list:
    return asyncio.run(interop(*questions))


@pytest.fixture(scope="module")
def ts_signed() -> list[dict]:
    return ask(*(sign_question(*case) for case in CASES))


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_typescript_signs_the_message_and_signature_python_makes(ts_signed, case):
    method, key, nonce, request = CASES[case]
    answer = ts_signed[case]
    fields = identity.signed_fields(request)
    assert answer["fields"] == fields
    assert answer["message"] == identity.canonical_message(method, fields, nonce)
    assert answer["signature"] == identity.sign_request(key, method, fields, nonce)


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_the_provider_accepts_what_typescript_signed(ts_signed, case):
    method, _, nonce, request = CASES[case]
    # The request as it would arrive: the TypeScript client's own message, signature included.
    arrived = json_format.ParseDict(ts_signed[case]["signed"], type(request)())
    assert arrived.signature.address == identity.normalize_address(ts_signed[case]["address"])
    identity.verify_request(
        arrived.signature.address,
        method,
        identity.signed_fields(arrived),
        arrived.signature.nonce,
        arrived.signature.signature,
        last_nonce=nonce - 1,
    )


def test_the_provider_refuses_a_typescript_signature_over_other_fields(ts_signed):
    method, _, _, request = CASES[0]
    arrived = json_format.ParseDict(ts_signed[0]["signed"], type(request)())
    arrived.job_id = "another-job"
    with pytest.raises(Refusal) as refused:
        identity.verify_request(
            arrived.signature.address,
            method,
            identity.signed_fields(arrived),
            arrived.signature.nonce,
            arrived.signature.signature,
            last_nonce=None,
        )
    assert refused.value.code == "signature_invalid"


def test_a_typescript_signature_is_bound_to_its_method(ts_signed):
    _, _, nonce, request = CASES[0]
    arrived = json_format.ParseDict(ts_signed[0]["signed"], type(request)())
    signer = identity.recover_signer("WatchJob", identity.signed_fields(arrived), nonce, arrived.signature.signature)
    assert signer != arrived.signature.address


def test_typescript_signs_the_worked_example_as_docs_signing_md_gives_it(ts_signed):
    answer = ts_signed[CASES.index(WORKED_EXAMPLE)]
    assert {key: answer[key] for key in PINNED} == PINNED


def test_typescript_recovers_the_signer_of_what_python_signed():
    questions, expected = [], []
    for method, key, nonce, request in CASES:
        signed = type(request)()
        signed.CopyFrom(request)
        fields = identity.signed_fields(signed)
        signed.signature.address = Account.from_key(key).address
        signed.signature.nonce = nonce
        signed.signature.signature = identity.sign_request(key, method, fields, nonce)
        questions.append({"op": "recover", "method": method, "request": json_format.MessageToDict(signed)})
        expected.append({"address": signed.signature.address})
    # And a request changed after Python signed it: someone else's signature.
    tampered = json.loads(json.dumps(questions[0]))
    tampered["request"]["jobId"] = "another-job"
    answers = ask(*questions, tampered)
    assert answers[:-1] == expected
    assert answers[-1]["address"] != expected[0]["address"]


def test_typescript_signs_exactly_the_rpcs_whose_request_has_a_signature():
    services = [
        provider_pb2.DESCRIPTOR.services_by_name["ProviderService"],
        asset_pb2.DESCRIPTOR.services_by_name["AssetService"],
        ledger_pb2.DESCRIPTOR.services_by_name["LedgerService"],
    ]
    signed = {
        method.name
        for service in services
        for method in service.methods
        if "signature" in method.input_type.fields_by_name
    }
    [answer] = ask({"op": "signedMethods"})
    assert set(answer) == signed
    assert "StartCompute" in signed and "GetNonce" not in signed


def test_typescript_refuses_to_sign_an_rpc_that_takes_no_signature():
    [answer] = ask(sign_question("GetNonce", KEY_A, NONCE, provider_pb2.GetNonceRequest(address="0x" + "11" * 20)))
    assert answer["error"].startswith("RangeError: GetNonce is not a signed RPC")
