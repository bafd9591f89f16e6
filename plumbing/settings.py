"""One configuration loader for every service.

A service declares its settings as a frozen dataclass whose fields carry a
default and a one-line doc (`setting(default, "doc")`); `load(cls, prefix)`
fills it from environment variables named PREFIX_FIELD (upper case). The docs
are printed by `c2d config`, so the defaults are documented where they live.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")  # a settings class is a dataclass


class SettingsError(ValueError):
    """An environment variable holds a value its setting cannot take."""


def setting(default: Any, doc: str) -> Any:
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for sequence defaults")
    return dataclasses.field(default=default, metadata={"doc": doc})


def data_dir() -> Path:
    """Where the embedded default keeps its databases, keys, workspaces and results:
    C2D_DATA_DIR, else the user's data directory ($XDG_DATA_HOME/c2d, ~/.local/share/c2d),
    the same from any working directory (a provider's keys must not change with the cwd)."""
    explicit = os.environ.get("C2D_DATA_DIR")
    if explicit:
        return Path(explicit).resolve()
    user_data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return (Path(user_data) / "c2d").resolve()


def _parse(raw: str, kind: Any, name: str) -> Any:
    origin = typing.get_origin(kind)
    if origin is typing.Union or str(origin) == "types.UnionType":
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise SettingsError(f"{name}={raw!r}: expected true or false")
    if kind is int or kind is float:
        try:
            return kind(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r}: expected a number") from None
    if kind is Path:
        return Path(raw)
    if typing.get_origin(kind) is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def load(cls: type[T], prefix: str, environ: typing.Mapping[str, str] | None = None) -> T:
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        name = f"{prefix}_{field.name}".upper()
        if name in environ:
            values[field.name] = _parse(environ[name], hints[field.name], name)
    return cls(**values)


def describe(cls: type, prefix: str) -> list[tuple[str, Any, str]]:
    """(variable, default, doc) for every setting: the documentation."""
    return [(f"{prefix}_{f.name}".upper(), f.default, f.metadata.get("doc", "")) for f in dataclasses.fields(cls)]
