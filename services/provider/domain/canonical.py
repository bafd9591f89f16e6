"""Canonical JSON: one byte string per value, so hashes and signatures agree.

The form is JSON with object keys sorted, no whitespace (``,`` and ``:``
separators), non-ASCII characters written as themselves (encoded UTF-8), and
list order kept. Object keys must be strings (Python would silently turn
``1`` into ``"1"`` and make two values collide), and NaN and infinities are
refused because JSON has no spelling for them. It matches JavaScript's
``JSON.stringify`` over key-sorted objects for strings, integers, booleans
and null; prefer those in anything signed or hashed, since float spellings
differ between languages.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def _plain(value: Any, path: str) -> Any:
    """Copy ``value`` into dicts and lists, refusing anything without a JSON form."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path} has a non-string key {key!r}")
            out[key] = _plain(item, f"{path}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{path}[{index}]") for index, item in enumerate(value)]
    raise TypeError(f"{path} is a {type(value).__name__}, which has no JSON form")


def canonical_json(value: Any) -> str:
    """Return the canonical JSON text of ``value``.

    Raises TypeError for values without a JSON form (bytes, sets, non-string
    keys) and ValueError for NaN or infinities.
    """
    return json.dumps(
        _plain(value, "value"),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def canonical_json_bytes(value: Any) -> bytes:
    """Return the UTF-8 encoding of ``canonical_json(value)``."""
    return canonical_json(value).encode("utf-8")
