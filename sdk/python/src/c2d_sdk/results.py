"""Results: the provider-signed manifest, and result chunks read without copying.

A finished job's GetJobDetails answer carries ``signed_results``: the
manifest as canonical JSON (``statement_json``) with the provider's Ed25519
signature. A download is checked against the sha256 that statement gives,
so neither the transport nor a tampered job record can change a result
unnoticed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from c2d.provider.v1 import provider_pb2

from .errors import IntegrityError


@dataclass(frozen=True)
class SignedFile:
    """One result file as the provider signed it."""

    index: int
    path: str
    size: int
    sha256: str
    kind: str  # RESULT_KIND_OUTPUT or RESULT_KIND_ALGORITHM_LOG


def verified_manifest(signed: provider_pb2.SignedResults, signing_public_key: str) -> list[SignedFile]:
    """The files of a signed results statement, once its signature by ``signing_public_key`` checks out."""
    if not signed.statement_json:
        raise IntegrityError("the job has no signed results manifest (it has no results yet)")
    if signed.public_key != signing_public_key:
        raise IntegrityError("the results manifest is signed by another key than the provider's")
    try:
        VerifyKey(bytes.fromhex(signing_public_key)).verify(
            signed.statement_json.encode(), bytes.fromhex(signed.signature)
        )
    except (BadSignatureError, ValueError):
        raise IntegrityError("the results manifest's signature does not verify") from None
    statement: dict[str, Any] = json.loads(signed.statement_json)
    return [
        SignedFile(
            index=int(f.get("index", 0)),
            path=f.get("path", ""),
            size=int(f.get("size", 0)),
            sha256=f.get("sha256", ""),
            kind=f.get("kind", "RESULT_KIND_OUTPUT"),
        )
        for f in statement.get("results", {}).get("files", [])
    ]


_DATA_KEY = (2 << 3) | 2  # GetComputeResultResponse.data: field 2, length-delimited


def _varint(raw: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(raw):
            raise DecodeError("truncated varint")
        byte = raw[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if byte < 0x80:
            return value, i


def split_result_chunk(raw: bytes) -> tuple[provider_pb2.GetComputeResultResponse, memoryview]:
    """Parses a GetComputeResultResponse, returning its data as a view into `raw`.

    Protobuf's parse and its .data accessor would each copy the chunk: only the
    other (small) fields go through protobuf here.
    """
    view, rest, data, i = memoryview(raw), [], memoryview(b""), 0
    while i < len(raw):
        start = i
        key, i = _varint(raw, i)
        wire = key & 7
        if wire == 0:
            _, i = _varint(raw, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            size, i = _varint(raw, i)
            if key == _DATA_KEY and i + size <= len(raw):
                data, i = view[i : i + size], i + size  # the last occurrence wins, as in protobuf
                continue
            i += size
        else:  # groups (wire types 3, 4) are not in this message: protobuf rejects or skips them
            message = provider_pb2.GetComputeResultResponse.FromString(raw)
            return message, memoryview(message.data)
        rest.append(view[start:i])
    if i > len(raw):
        raise DecodeError("truncated GetComputeResultResponse")
    return provider_pb2.GetComputeResultResponse.FromString(b"".join(rest)), data
