"""Reading what a client or a job sent: JSON within limits, integers that fit.

Every JSON a service parses from a request (a DDO, algorithm parameters, a
page token, a sealed file list) or from what a job wrote goes through
`parse_json`. Python's decoder recurses once per nesting level, and a process
whose recursion limit was raised (py_ecc raises it to 100,000) overflows the
C stack on a deep document and dies with SIGSEGV, taking every server of
`c2d up` with it. So the size, the nesting depth and the number of keys and
items are checked before the decoder sees the text, by a linear scan with no
recursion: strings are blanked out by one regular expression (run in C), and
the depth is the running sum of the brackets left.

Text with a NUL character (\\x00) is refused where a request is decoded
(`nul_field`, from plumbing.server), and so is a JSON string escaping one
(\\u0000) in `parse_json`: PostgreSQL's text cannot hold one, and
psycopg2 raises ValueError on it deep in a query, which reached clients as
INTERNAL (found by the fuzzer: ListAssets with type "\\x00").

Numbers that a client sends as uint64 (offsets, sequences, nonces) go
through `int64`: files, event logs and databases count in signed 64 bits,
and a larger value otherwise fails deep inside them (OverflowError from
SQLite, "cannot fit 'int'" from a seek) as UNKNOWN or INTERNAL.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from plumbing import errors

MAX_JSON_LENGTH = 4 << 20  # characters; gRPC's default message limit is 4 MiB
MAX_JSON_DEPTH = 64
MAX_JSON_ITEMS = 100_000  # keys and array items, the whole document
INT64_MAX = 2**63 - 1

# A string from its opening quote to its closing one, or to the end of the text
# if it is never closed (the decoder then refuses it). Possessive, so a string
# that never ends is read once, not once per quote in it.
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET_OR_COMMA = re.compile(r"[^\[\]{},]++")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1, ",": 0}
# \u0000 after an even number of backslashes (else it is a backslash and the text "u0000").
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def parse_json(
    text: str | bytes,
    field: str,
    *,
    max_length: int = MAX_JSON_LENGTH,
    max_depth: int = MAX_JSON_DEPTH,
    max_items: int = MAX_JSON_ITEMS,
) -> Any:
    """`text` decoded as JSON once it is within the limits.

    A limit exceeded raises errors.InvalidArgument naming `field` and the
    limit (reasons JSON_TOO_LONG, JSON_TOO_DEEP, JSON_TOO_MANY_ITEMS). Text that
    is not JSON, or bytes that are not UTF-8, raise ValueError as json.loads
    does, so each caller keeps answering it with its own reason."""
    if len(text) > max_length:
        unit = "characters" if isinstance(text, str) else "bytes"
        raise _refused(f"{field} is {len(text)} {unit} long; at most {max_length} are accepted", "json_too_long", field)
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    structure = _NOT_BRACKET_OR_COMMA.sub("", _STRING.sub("", text))
    depth = max(accumulate(map(_DEPTH_STEP.__getitem__, structure), initial=0))
    if depth > max_depth:
        raise _refused(
            f"{field} is JSON nested {depth} levels deep; at most {max_depth} levels are accepted",
            "json_too_deep",
            field,
        )
    # Each value in a container but its last is followed by a comma.
    items = structure.count(",") + structure.count("[") + structure.count("{")
    if items > max_items:
        raise _refused(
            f"{field} holds about {items} JSON keys and items; at most {max_items} are accepted",
            "json_too_many_items",
            field,
        )
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise _refused(
            f"{field} holds a NUL character (\\u0000) in a JSON string, which no text accepts; remove it",
            "text_has_nul",
            field,
        )
    return json.loads(text)  # noqa: TID251 - this is the bounded parser


def _refused(message: str, code: str, field: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(message, code, field=field)


def int64(value: int, field: str) -> int:
    """`value` if it fits a signed 64-bit integer; otherwise errors.InvalidArgument naming `field`."""
    if value > INT64_MAX:
        raise errors.InvalidArgument(
            f"{field} {value} is too large: it must be at most {INT64_MAX} (2^63 - 1)",
            "number_out_of_range",
            field=field,
        )
    return value


def nul_field(message: Message, prefix: str = "") -> str:
    """The path of the first string field (nested ones too, map keys and values)
    that holds a NUL character, e.g. `spec.dataset.did`; "" if none does."""
    for fd, value in message.ListFields():
        name = prefix + fd.name
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            key_fd, value_fd = fd.message_type.fields_by_name["key"], fd.message_type.fields_by_name["value"]
            for key, item in value.items():
                if key_fd.type == FieldDescriptor.TYPE_STRING and "\x00" in key:
                    return name
                found = _nul_in(value_fd, item, f"{name}[{key!r}]")
                if found:
                    return found
        elif fd.is_repeated:
            for index, item in enumerate(value):
                found = _nul_in(fd, item, f"{name}[{index}]")
                if found:
                    return found
        else:
            found = _nul_in(fd, value, name)
            if found:
                return found
    return ""


def _nul_in(fd: FieldDescriptor, value: Any, name: str) -> str:
    if fd.type == FieldDescriptor.TYPE_STRING:
        return name if "\x00" in value else ""
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return nul_field(value, name + ".")
    return ""
