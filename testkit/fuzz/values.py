"""Hypothesis strategies for hostile protobuf requests, built from the
descriptors alone so a new RPC or field is fuzzed with no change here.

Values are chosen by field type and, for strings, by field name: DIDs for
`did` fields, job ids for `job_id`, deep or broken JSON for `*_json` and
`page_token`, addresses for `*address`, URLs for `url`. Each draws from the
real values the fuzz stack published (so some requests are near-valid) and
from edge values: empty, huge, unicode, NUL, negative, 2^63 and up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

HEX = "0123456789abcdef"
MAX_DEPTH = 3


# The world the fuzzer knows: real DIDs, job ids, addresses of the fuzz stack.
@dataclass(repr=False)
class Known:
    dids: list[str] = field(default_factory=lambda: ["did:op:" + "0" * 64])
    job_ids: list[str] = field(default_factory=lambda: ["job-0"])
    addresses: list[str] = field(default_factory=lambda: ["0x" + "0" * 40])
    order_ids: list[str] = field(default_factory=lambda: ["0x" + "0" * 64])
    environment_ids: list[str] = field(default_factory=lambda: ["local-cpu"])
    service_ids: list[str] = field(default_factory=lambda: ["compute", "access"])
    urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:1/x"])
    # Valid values to start from and damage a little: messages by full name, JSON by field name.
    seeds: dict[str, list[Message]] = field(default_factory=dict)
    jsons: dict[str, list[str]] = field(default_factory=dict)

    def __repr__(self) -> str:  # in every failure report: the stack's values, not the values drawn
        return "Known(...)"


EDGE_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\n\r\t",
    "../../etc/passwd",
    "/etc/passwd",
    "%s%n%x",
    "'; DROP TABLE jobs; --",
    "\u202e\u200b\ufeff",
    "é" * 3,
    "\U0001f600" * 10,
    "\ufffd",
    "null",
    "true",
    "-1",
    "18446744073709551616",
    "NaN",
    "{}",
    "[]",
]


def _huge_text() -> st.SearchStrategy[str]:
    return st.sampled_from([1 << 10, 1 << 16, 1 << 20, 5 << 20]).flatmap(
        lambda n: st.sampled_from(["a", "é", "\x00", "{", "0"]).map(lambda c: c * (n // len(c.encode())))
    )


def plain_text() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(EDGE_TEXT), st.text(max_size=40), _huge_text())


def _mutated(value: str) -> st.SearchStrategy[str]:
    """A near miss of a real value: one character changed, dropped or added, the case flipped, padded."""
    if not value:
        return st.just("x")

    def change(i: int, c: str) -> str:
        i %= len(value)
        return value[:i] + c + value[i + 1 :]

    return st.one_of(
        st.tuples(st.integers(0, len(value) - 1), st.sampled_from(list(HEX + "gG \x00é"))).map(lambda t: change(*t)),
        st.just(value[:-1]),
        st.just(value + "0"),
        st.just(value.upper()),
        st.just(f" {value}"),
        st.just(value + "\n"),
        st.just(value * 2),
    )


def near(values: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(values).flatmap(lambda v: st.one_of(st.just(v), _mutated(v)))


def dids(known: Known) -> st.SearchStrategy[str]:
    hex64 = st.text(HEX, min_size=64, max_size=64)
    return st.one_of(
        near(known.dids),
        hex64.map(lambda h: "did:op:" + h),
        hex64.map(lambda h: "did:ethr:" + h),
        hex64,
        st.just("did:op:"),
        st.just("did:op:" + "f" * 10_000),
        plain_text(),
    )


def deep_json() -> st.SearchStrategy[str]:
    depth = st.sampled_from([10, 100, 1000, 100_000])
    return st.one_of(
        depth.map(lambda n: "[" * n + "]" * n),
        depth.map(lambda n: '{"a":' * n + "1" + "}" * n),
        depth.map(lambda n: "[" * n),  # unterminated
        st.just('{"a": 1e999999}'),
        st.just('{"a": NaN}'),
        st.just("1" * 100_000),
        st.just('"' + "x" * 1_000_000 + '"'),
        st.just("[" + ",".join(["{}"] * 100_000) + "]"),
        st.just('{"__proto__": {"x": 1}}'),
        st.just("\ufeff{}"),
        st.just('{"a":"\\ud800"}'),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
            max_leaves=20,
        ).map(json.dumps),
        plain_text(),
    )


HOSTILE_JSON: list[object] = [
    None,
    True,
    -1,
    0,
    1 << 64,
    -(1 << 63) - 1,
    1.5,
    1e308,
    "",
    "\x00",
    "a\x00b",
    "x" * 100_000,
    "did:op:" + "0" * 64,
    "../../etc/passwd",
    [],
    {},
    [[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]],
    {"a": {"b": {"c": {"d": {}}}}},
    ["x"] * 1000,
]


def _paths(value: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    paths = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            paths += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths += _paths(item, (*prefix, index))
    return paths


def _replaced(document: object, path: tuple[object, ...], value: object) -> object:
    if not path:
        return value
    copy = json.loads(json.dumps(document))
    target = copy
    for key in path[:-1]:
        target = target[key]  # type: ignore[index]
    target[path[-1]] = value  # type: ignore[index]
    return copy


def json_mutations(valid: list[str]) -> st.SearchStrategy[str]:
    """A valid document with one value (or key) replaced by a hostile one: past the parser, into the rules."""

    def mutate(text: str) -> st.SearchStrategy[str]:
        document = json.loads(text)
        paths = _paths(document)
        replace_value = st.tuples(st.sampled_from(paths), st.sampled_from(HOSTILE_JSON)).map(
            lambda t: json.dumps(_replaced(document, t[0], t[1]))
        )
        dropped = st.sampled_from([p for p in paths if p]).map(lambda p: json.dumps(_dropped(document, p)))
        return st.one_of(st.just(text), replace_value, dropped) if len(paths) > 1 else replace_value

    return st.sampled_from(valid).flatmap(mutate)


def _dropped(document: object, path: tuple[object, ...]) -> object:
    copy = json.loads(json.dumps(document))
    target = copy
    for key in path[:-1]:
        target = target[key]  # type: ignore[index]
    del target[path[-1]]  # type: ignore[union-attr]
    return copy


def addresses(known: Known) -> st.SearchStrategy[str]:
    return st.one_of(
        near(known.addresses),
        st.text(HEX + "ABCDEF", min_size=40, max_size=40).map(lambda h: "0x" + h),
        st.just("0x"),
        plain_text(),
    )


def urls(known: Known) -> st.SearchStrategy[str]:
    return st.one_of(
        near(known.urls),
        st.sampled_from(
            [
                "file:///etc/passwd",
                "http://169.254.169.254/latest/meta-data/",
                "http://[::1]:1/",
                "http://localhost:0/",
                "gopher://127.0.0.1:25/",
                "http://127.0.0.1:5432/",
                "ipfs://",
                "s3://",
                "http://" + "a" * 70_000 + "/",
                "http:///x",
                "http://user:pass@127.0.0.1:1/x",
            ]
        ),
        plain_text(),
    )


def text_for(name: str, known: Known) -> st.SearchStrategy[str]:
    """A string for the field `name`, by what such fields hold."""
    if name == "did" or name.endswith("_did") or name == "dids":
        return dids(known)
    if name.endswith("_json") or name == "page_token":
        valid = known.jsons.get(name)
        return deep_json() | json_mutations(valid) if valid else deep_json()
    if name.endswith("job_id") or name == "job_ids":
        return st.one_of(near(known.job_ids), plain_text())
    if name.endswith("address") or name == "viewers":
        return addresses(known)
    if name == "order_id" or name.endswith("_order"):
        return st.one_of(near(known.order_ids), plain_text())
    if name == "environment_id":
        return st.one_of(near(known.environment_ids), plain_text())
    if name == "service_id":
        return st.one_of(near(known.service_ids), plain_text())
    if name in ("url", "urls"):
        return urls(known)
    return plain_text()


_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(1 << 31), (1 << 31) - 1),
    FieldDescriptor.TYPE_SINT32: (-(1 << 31), (1 << 31) - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(1 << 31), (1 << 31) - 1),
    FieldDescriptor.TYPE_INT64: (-(1 << 63), (1 << 63) - 1),
    FieldDescriptor.TYPE_SINT64: (-(1 << 63), (1 << 63) - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(1 << 63), (1 << 63) - 1),
    FieldDescriptor.TYPE_UINT32: (0, (1 << 32) - 1),
    FieldDescriptor.TYPE_FIXED32: (0, (1 << 32) - 1),
    FieldDescriptor.TYPE_UINT64: (0, (1 << 64) - 1),
    FieldDescriptor.TYPE_FIXED64: (0, (1 << 64) - 1),
}


def integers(kind: int) -> st.SearchStrategy[int]:
    low, high = _INT_RANGES[kind]
    edges = [0, 1, -1, 2, 10, 255, 256, 1 << 16, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32]
    edges += [(1 << 53) + 1, (1 << 62), (1 << 63) - 1, 1 << 63, (1 << 64) - 1, -(1 << 31), -(1 << 63), low, high]
    return st.one_of(st.sampled_from(sorted({e for e in edges if low <= e <= high})), st.integers(low, high))


def _value(fd: FieldDescriptor, known: Known, depth: int) -> st.SearchStrategy[object]:
    t = fd.type
    if t == FieldDescriptor.TYPE_STRING:
        return text_for(fd.name, known)
    if t == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.sampled_from([b"", b"\x00" * 1000, b"\xff" * (1 << 20)]))
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_ENUM:
        numbers = [v.number for v in fd.enum_type.values]
        return st.one_of(st.sampled_from(numbers), st.sampled_from([-1, 3, 99, (1 << 31) - 1, -(1 << 31)]))
    if t in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return st.floats(width=32 if t == FieldDescriptor.TYPE_FLOAT else 64)
    if t == FieldDescriptor.TYPE_MESSAGE:
        return messages(fd.message_type, known, depth + 1)
    return integers(t)


@st.composite
def _message(draw: st.DrawFn, descriptor: Descriptor, known: Known, depth: int) -> Message:
    from google.protobuf import message_factory

    message = message_factory.GetMessageClass(descriptor)()
    seeds = known.seeds.get(descriptor.full_name)
    if seeds and draw(st.booleans()):
        # A valid message with a few fields redrawn: past the first checks, into the rules.
        message.CopyFrom(draw(st.sampled_from(seeds)))
        for fd in draw(
            st.lists(st.sampled_from(list(descriptor.fields)), min_size=1, max_size=3, unique_by=lambda f: f.number)
        ):
            message.ClearField(fd.name)
            _fill(draw, message, fd, known, depth)
        return message
    for fd in descriptor.fields:
        if fd.message_type is not None and depth >= MAX_DEPTH:
            continue
        if draw(st.booleans()):
            _fill(draw, message, fd, known, depth)
    return message


def _fill(draw: st.DrawFn, message: Message, fd: FieldDescriptor, known: Known, depth: int) -> None:
    """Sets one field of `message` to drawn values."""
    if fd.message_type is not None and depth >= MAX_DEPTH:
        return
    is_map = fd.message_type is not None and fd.message_type.GetOptions().map_entry
    if fd.is_repeated and not is_map:
        many = st.integers(0, 4) | st.just(300 if fd.message_type is None else 4)
        target = getattr(message, fd.name)
        for _ in range(draw(many)):
            value = draw(_value(fd, known, depth))
            if fd.message_type is not None:
                target.add().CopyFrom(value)
            else:
                target.append(value)
    elif is_map:
        key_fd, value_fd = fd.message_type.fields_by_name["key"], fd.message_type.fields_by_name["value"]
        target = getattr(message, fd.name)
        for _ in range(draw(st.integers(0, 3))):
            key = draw(_value(key_fd, known, depth))
            value = draw(_value(value_fd, known, depth))
            if value_fd.message_type is not None:
                target[key].CopyFrom(value)
            else:
                target[key] = value
    elif fd.message_type is not None:
        getattr(message, fd.name).CopyFrom(draw(_value(fd, known, depth)))
    else:
        setattr(message, fd.name, draw(_value(fd, known, depth)))


def messages(descriptor: Descriptor, known: Known, depth: int = 0) -> st.SearchStrategy[Message]:
    return _message(descriptor, known, depth)


# -- bytes-level damage: what no well-behaved serializer sends -------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def string_paths(descriptor: Descriptor, depth: int = 0) -> list[list[int]]:
    """Field-number paths from the request to each string field (nested messages included)."""
    paths: list[list[int]] = []
    for fd in descriptor.fields:
        if fd.type == FieldDescriptor.TYPE_STRING:
            paths.append([fd.number])
        elif fd.message_type is not None and depth < MAX_DEPTH and not fd.message_type.GetOptions().map_entry:
            paths += [[fd.number, *rest] for rest in string_paths(fd.message_type, depth + 1)]
    return paths


INVALID_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"abc\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"]


def invalid_utf8_patch(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    """Bytes that, appended to a serialized request, set one (possibly nested) string field to
    invalid UTF-8: protobuf merges a repeated length-delimited field into the message."""
    paths = string_paths(descriptor)
    if not paths:
        return st.just(b"")

    return st.tuples(st.sampled_from(paths), st.sampled_from(INVALID_UTF8)).map(lambda t: _string_payload(*t))


def _string_payload(path: list[int], value: bytes) -> bytes:
    payload = _length_delimited(path[-1], value)
    for number in reversed(path[:-1]):
        payload = _length_delimited(number, payload)
    return payload
