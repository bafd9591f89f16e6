"""The consumer's GetComputeResult deserializer: the same message protobuf
parses, with the data left as a view into the received bytes."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError

from c2d.common.v1 import common_pb2
from c2d.provider.v1 import provider_pb2
from c2d_sdk.results import split_result_chunk

ENTRY = common_pb2.ResultFile(index=3, path="out/table.csv", size=123456, sha256="ab" * 32)


def samples() -> list[provider_pb2.GetComputeResultResponse]:
    return [
        provider_pb2.GetComputeResultResponse(),
        provider_pb2.GetComputeResultResponse(data=b"x"),
        provider_pb2.GetComputeResultResponse(data=bytes(range(256)) * 4096, offset=1 << 33),
        provider_pb2.GetComputeResultResponse(data=b"tail", offset=7, file=ENTRY),
    ]


@pytest.mark.parametrize("message", samples(), ids=["empty", "one byte", "1 MiB far in", "with entry"])
def test_it_parses_what_protobuf_parses(message):
    raw = message.SerializeToString()
    parsed, data = split_result_chunk(raw)
    assert bytes(data) == message.data
    assert isinstance(data, memoryview) and (not data or data.obj is raw)  # a view, not a copy
    parsed.data = bytes(data)
    assert parsed == message


def test_unknown_fields_and_a_repeated_data_field_follow_protobuf():
    first = provider_pb2.GetComputeResultResponse(data=b"first", offset=1).SerializeToString()
    second = provider_pb2.GetComputeResultResponse(data=b"second").SerializeToString()
    unknown = bytes([(15 << 3) | 0, 42, (14 << 3) | 2, 3]) + b"abc"  # a varint and a length-delimited field
    raw = first + unknown + second
    expected = provider_pb2.GetComputeResultResponse.FromString(raw)
    parsed, data = split_result_chunk(raw)
    assert bytes(data) == expected.data == b"second"  # the last one wins
    assert parsed.offset == expected.offset == 1


def test_a_truncated_message_is_refused_like_protobuf_refuses_it():
    raw = provider_pb2.GetComputeResultResponse(data=b"0123456789", offset=300, file=ENTRY).SerializeToString()
    for cut in range(1, len(raw)):
        try:
            provider_pb2.GetComputeResultResponse.FromString(raw[:cut])
        except DecodeError:
            with pytest.raises(DecodeError):
                split_result_chunk(raw[:cut])
