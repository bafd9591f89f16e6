"""signed_fields builds plain-scalar requests without json_format: it must
give exactly json_format's proto3 JSON form, or signatures would not verify."""

from __future__ import annotations

import pytest
from google.protobuf import json_format

from c2d.provider.v1 import auth_pb2, provider_pb2
from services.provider.domain.identity import signed_fields

SIGNATURE = auth_pb2.ConsumerSignature(address="0x" + "ab" * 20, nonce=5, signature="0x00")


def json_form(request):  # type: ignore[no-untyped-def]
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("signature")
    return json_format.MessageToDict(copy, preserving_proto_field_name=True)


@pytest.mark.parametrize(
    "request_",
    [
        provider_pb2.GetJobDetailsRequest(job_id="job-1", signature=SIGNATURE),
        provider_pb2.GetJobDetailsRequest(signature=SIGNATURE),  # only defaults: {}
        provider_pb2.GetJobDetailsRequest(job_id="j\u00e9b"),
        provider_pb2.WatchJobRequest(job_id="job-1", after_sequence=2**40, signature=SIGNATURE),  # int64: a JSON string
        provider_pb2.ListJobsRequest(
            statuses=[1, 70], page_size=5, page_token="t", signature=SIGNATURE
        ),  # enums, repeated
        provider_pb2.ListJobsRequest(page_size=5, signature=SIGNATURE),  # uint32
        provider_pb2.StartComputeRequest(
            spec=provider_pb2.ComputeSpec(environment_id="env", max_duration_seconds=3), signature=SIGNATURE
        ),
    ],
)
def test_signed_fields_is_the_proto3_json_form_without_the_signature(request_):
    fields = signed_fields(request_)
    assert fields == json_form(request_)
    assert type(fields) is dict and all(type(v) in (str, int, bool, list, dict) for v in fields.values())
