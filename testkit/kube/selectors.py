"""Label and field selectors, as the API server parses and applies them.

``LabelSelector.parse("app=c2d,stage in (configure,publish),!legacy")`` and
``FieldSelector.parse("status.phase=Running,metadata.name!=x")`` raise
``SelectorError`` for what a real server answers 400 to. Field selectors only
accept the fields the real server indexes for the kind (``FIELDS``; every kind
has metadata.name and metadata.namespace): a custom resource cannot be
selected by its status, on a real cluster or here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SelectorError(ValueError):
    """A selector the API server refuses (HTTP 400)."""


# The fields a real 1.30 server accepts in a field selector, by resource plural.
FIELDS: dict[str, frozenset[str]] = {
    "pods": frozenset(
        {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        }
    ),
    "secrets": frozenset({"type"}),
    "events": frozenset(
        {
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        }
    ),
    "nodes": frozenset({"spec.unschedulable"}),
    "namespaces": frozenset({"status.phase"}),
}
_ALWAYS = frozenset({"metadata.name", "metadata.namespace"})

_LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_SET_REQUIREMENT = re.compile(r"(?P<key>[^\s!=<>()]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)")
_BINARY_REQUIREMENT = re.compile(r"(?P<key>[^\s!=<>()]+)\s*(?P<op>==|=|!=|<|>)\s*(?P<value>[^\s!=<>(),]*)")
_EXISTS_REQUIREMENT = re.compile(r"(?P<neg>!?)\s*(?P<key>[^\s!=<>(),]+)")


def _split(text: str) -> list[str]:
    """Splits on the commas that are not inside parentheses."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            raise SelectorError(f"unbalanced parentheses in {text!r}")
        current.append(char)
    parts.append("".join(current).strip())
    return [part for part in parts if part]


def _checked_key(key: str) -> str:
    if len(key.rsplit("/", 1)[-1]) > 63 or not _LABEL_KEY.fullmatch(key):
        raise SelectorError(f"invalid label key {key!r}")
    return key


def _checked_value(value: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
        raise SelectorError(f"invalid label value {value!r}")
    return value


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # in, notin, exists, !exists, gt, lt
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        match self.op:
            case "exists":
                return present
            case "!exists":
                return not present
            case "in":
                return present and labels[self.key] in self.values
            case "notin":
                return not present or labels[self.key] not in self.values
            case _:  # gt, lt: the label and the value are integers
                try:
                    have, want = int(labels[self.key]), int(next(iter(self.values)))
                except (KeyError, ValueError):
                    return False
                return have > want if self.op == "gt" else have < want


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        requirements = []
        for part in _split(text or ""):
            if found := _SET_REQUIREMENT.fullmatch(part):
                values = frozenset(_checked_value(v.strip()) for v in found["values"].split(",") if v.strip())
                if not values:
                    raise SelectorError(f"{found['op']} needs at least one value: {part!r}")
                requirements.append(Requirement(_checked_key(found["key"]), found["op"], values))
            elif found := _BINARY_REQUIREMENT.fullmatch(part):
                op = {"=": "in", "==": "in", "!=": "notin", ">": "gt", "<": "lt"}[found["op"]]
                value = found["value"]
                if op in ("gt", "lt") and not value.lstrip("-").isdigit():
                    raise SelectorError(f"{found['op']} needs an integer: {part!r}")
                requirements.append(Requirement(_checked_key(found["key"]), op, frozenset({_checked_value(value)})))
            elif found := _EXISTS_REQUIREMENT.fullmatch(part):
                op = "!exists" if found["neg"] else "exists"
                requirements.append(Requirement(_checked_key(found["key"]), op))
            else:
                raise SelectorError(f"unable to parse requirement {part!r}")
        return cls(tuple(requirements))

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        return all(requirement.matches(labels or {}) for requirement in self.requirements)


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The field as a selector compares it: a string; absent is the empty string."""
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class FieldSelector:
    terms: tuple[tuple[str, bool, str], ...] = ()  # (field, equal?, value)

    @classmethod
    def parse(cls, text: str | None, plural: str) -> FieldSelector:
        terms = []
        allowed = _ALWAYS | FIELDS.get(plural, frozenset())
        for part in _split(text or ""):
            found = re.fullmatch(r"(?P<field>[^=!]+?)\s*(?P<op>==|=|!=)\s*(?P<value>.*)", part)
            if not found:
                raise SelectorError(f"invalid field selector {part!r}")
            if found["field"] not in allowed:
                raise SelectorError(f"field label not supported: {found['field']}")
            terms.append((found["field"], found["op"] != "!=", found["value"].strip()))
        return cls(tuple(terms))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all((field_value(obj, field) == value) == equal for field, equal, value in self.terms)
