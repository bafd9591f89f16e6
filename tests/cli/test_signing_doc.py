"""docs/signing.md is what the code does: its worked example is recomputed by the SDK and verified by
the provider's own check, and its tables list exactly the signed RPCs and their fields."""

from __future__ import annotations

import json
import re
from pathlib import Path

from google.protobuf import json_format

from c2d.provider.v1 import asset_pb2, ledger_pb2, provider_pb2
from c2d_sdk import Signer
from c2d_sdk.signing import canonical_message, eip191_digest, signed_fields
from plumbing.ethereum import Account, encode_defunct
from services.provider.domain import identity

DOC = (Path(__file__).resolve().parents[2] / "docs" / "signing.md").read_text()


def example(name: str) -> str:
    found = re.search(rf"<!-- signing-example:{name} -->\n```\w*\n(.*?)\n```", DOC, re.S)
    assert found, f"docs/signing.md has no example block {name!r}"
    return found.group(1)


def test_the_worked_example_is_what_the_sdk_computes():
    signer = Signer(example("private-key"))
    assert signer.address == example("address")
    method, nonce = example("method"), int(example("nonce"))
    request = json_format.Parse(example("request"), provider_pb2.StartComputeRequest())
    message = canonical_message(method, signed_fields(request), nonce)
    assert message == example("message")
    assert "0x" + eip191_digest(message).hex() == example("digest")
    signer.sign(method, request, nonce)
    assert request.signature.signature == example("signature")


def test_the_worked_example_verifies_with_the_provider_and_eth_account():
    request = json_format.Parse(example("request"), provider_pb2.StartComputeRequest())
    nonce, signature = int(example("nonce")), example("signature")
    # the provider's own code, as it checks a request it received
    assert identity.canonical_message(example("method"), identity.signed_fields(request), nonce) == example("message")
    assert identity.recover_signer(example("method"), identity.signed_fields(request), nonce, signature) == example(
        "address"
    )
    # and an independent implementation of EIP-191 personal_sign
    signed = Account.sign_message(encode_defunct(text=example("message")), example("private-key"))
    assert "0x" + bytes(signed.signature).hex() == signature


def test_a_signature_for_one_method_does_not_verify_for_another():
    request = json_format.Parse(example("request"), provider_pb2.StartComputeRequest())
    fields, nonce = identity.signed_fields(request), int(example("nonce"))
    assert identity.recover_signer("InitializeCompute", fields, nonce, example("signature")) != example("address")


def _table_rows(heading: str) -> dict[str, str]:
    lines = DOC.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i, line in enumerate(lines[start:]) if not line.startswith("|")), len(lines) - start)
    table = lines[start : start + end]
    rows = {}
    for line in table[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1]
    return rows


def test_the_table_lists_every_signed_rpc_with_its_fields_in_order():
    documented = _table_rows("## The signed RPCs and their fields")
    actual = {}
    for module in (provider_pb2, asset_pb2, ledger_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for rpc in service.methods:
                if "signature" in rpc.input_type.fields_by_name:
                    actual[f"{service.name}/{rpc.name}"] = sorted(
                        f.name for f in rpc.input_type.fields if f.name != "signature"
                    )
    assert set(documented) == set(actual)
    for rpc, fields in actual.items():
        assert re.findall(r"`(\w+)`", documented[rpc]) == fields, rpc


def test_the_nested_messages_of_a_spec_are_listed_in_canonical_order():
    documented = _table_rows("The messages inside `spec`:")
    messages = {
        "ComputeSpec": provider_pb2.ComputeSpec,
        "AssetOrder": provider_pb2.AssetOrder,
        "RawAlgorithm": provider_pb2.RawAlgorithm,
        "AlgorithmContainer": provider_pb2.RawAlgorithm.DESCRIPTOR.fields_by_name["container"].message_type,
    }
    for name, message in messages.items():
        descriptor = getattr(message, "DESCRIPTOR", message)
        assert re.findall(r"`(\w+)`", documented[name]) == sorted(f.name for f in descriptor.fields), name


def test_64_bit_fields_are_strings_and_defaults_are_left_out():
    request = provider_pb2.WatchJobRequest(job_id="j", after_sequence=7)
    assert json.dumps(signed_fields(request), sort_keys=True) == '{"after_sequence": "7", "job_id": "j"}'
    assert signed_fields(provider_pb2.ListJobsRequest()) == {}
    assert signed_fields(provider_pb2.StreamJobLogsRequest(job_id="j", follow=False)) == {"job_id": "j"}
