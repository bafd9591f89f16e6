"""What the emulated API server refuses with 422 Invalid, as a real 1.30 one would.

* ``check_metadata``: names (DNS-1123 subdomains; namespaces and a few kinds
  DNS-1123 labels), label keys and values, and that a name is given.
* ``check_schema``: built-in kinds against the Kubernetes 1.30 OpenAPI
  schema in strict mode (unknown fields refused) -- the schema
  ``kubernetes_validate.validate(obj, "1.30.0", strict=True)`` uses, compiled
  once per kind. A real server drops unknown fields with a warning instead:
  refusing them here catches the typo that would be dropped silently there.
* ``CustomResourceSchema``: a CRD version's openAPIV3Schema, which validates
  custom objects and prunes the fields it does not declare, as a real server
  does for structural schemas.

Every failure is an ``Invalid`` carrying the field path and the reason.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
from kubernetes_validate.utils import schema_contents
from referencing import Registry, Resource

KUBERNETES_VERSION = "1.30.0"
_SCHEMA_DIR = f"kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict"
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
# Kinds whose names must be DNS-1123 labels (63 characters, no dots).
LABEL_NAMED = frozenset({"namespaces", "services"})


class Invalid(ValueError):
    """An object the API server refuses: 422 with these causes."""

    def __init__(self, kind: str, name: str, causes: list[tuple[str, str]]):
        self.kind, self.name, self.causes = kind, name, causes
        details = ", ".join(f"{field}: {reason}" for field, reason in causes)
        super().__init__(f'{kind} "{name}" is invalid: {details}')


def _label_key_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return f"prefix part must be a DNS-1123 subdomain: {key!r}"
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return f"name part must be 63 characters or less, alphanumeric, '-', '_' or '.': {key!r}"
    return None


def check_metadata(obj: Mapping[str, Any], plural: str, kind: str) -> None:
    metadata = obj.get("metadata") or {}
    name = metadata.get("name") or ""
    causes: list[tuple[str, str]] = []
    if not name:
        causes.append(("metadata.name", "Required value: name or generateName is required"))
    elif plural in LABEL_NAMED:
        if len(name) > 63 or not _DNS_LABEL.fullmatch(name):
            causes.append(("metadata.name", f"Invalid value: {name!r}: a DNS-1123 label must be 63 characters or less"))
    elif len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        causes.append(("metadata.name", f"Invalid value: {name!r}: a lowercase RFC 1123 subdomain is required"))
    for key, value in (metadata.get("labels") or {}).items():
        if problem := _label_key_problem(key):
            causes.append((f"metadata.labels[{key}]", problem))
        if not isinstance(value, str) or len(value) > 63 or (value and not _LABEL_NAME.fullmatch(value)):
            causes.append(
                (
                    f"metadata.labels[{key}]",
                    f"Invalid value: {value!r}: a label value is 63 characters "
                    "or less, empty or alphanumeric with '-', '_' or '.' inside",
                )
            )
    for key in metadata.get("annotations") or {}:
        if problem := _label_key_problem(key):
            causes.append((f"metadata.annotations[{key}]", problem))
    if causes:
        raise Invalid(kind, name, causes)


@functools.cache
def _builtin_validator(api_version: str, kind: str) -> jsonschema.Validator | None:
    # The file naming of kubernetes_validate: rbac.authorization.k8s.io/v1 Role -> role-rbac-v1.json
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = schema_contents(f"{_SCHEMA_DIR}/{kind.lower()}-{group_version}.json", KUBERNETES_VERSION)
    except FileNotFoundError:
        return None
    definitions = schema_contents(f"{_SCHEMA_DIR}/_definitions.json", KUBERNETES_VERSION)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def _path(error: jsonschema.ValidationError) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path).lstrip(".")


def check_schema(obj: Mapping[str, Any]) -> bool:
    """Validates a built-in kind; False when the kind has no built-in schema (a custom resource)."""
    validator = _builtin_validator(str(obj.get("apiVersion")), str(obj.get("kind")))
    if validator is None:
        return False
    error = jsonschema.exceptions.best_match(validator.iter_errors(obj))
    if error is not None:
        name = (obj.get("metadata") or {}).get("name", "")
        raise Invalid(str(obj.get("kind")), name, [(_path(error) or "<root>", error.message)])
    return True


def _prune(value: Any, schema: Mapping[str, Any]) -> Any:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return value
    if isinstance(value, Mapping):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        if properties is None and isinstance(additional, Mapping):
            return {key: _prune(item, additional) for key, item in value.items()}
        properties = properties or {}
        return {key: _prune(item, properties[key]) for key, item in value.items() if key in properties}
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [_prune(item, schema["items"]) for item in value]
    return value


@dataclass(frozen=True)
class CustomResourceSchema:
    """One served version of a CRD: its kind, scope, status subresource and schema."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    has_status: bool
    schema: Mapping[str, Any]

    @classmethod
    def from_crd(cls, crd: Mapping[str, Any]) -> list[CustomResourceSchema]:
        spec = crd["spec"]
        return [
            cls(
                group=spec["group"],
                version=version["name"],
                plural=spec["names"]["plural"],
                kind=spec["names"]["kind"],
                namespaced=spec["scope"] == "Namespaced",
                has_status="status" in (version.get("subresources") or {}),
                schema=(version.get("schema") or {}).get("openAPIV3Schema") or {"type": "object"},
            )
            for version in spec["versions"]
            if version.get("served", True)
        ]

    @functools.cached_property
    def _validator(self) -> jsonschema.Validator:
        return jsonschema.Draft7Validator(self.schema)

    def validate(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """The object pruned to its schema; raises Invalid."""
        pruned = dict(
            _prune({k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}, self.schema)
        )
        pruned.update({key: obj[key] for key in ("apiVersion", "kind", "metadata") if key in obj})
        body = {key: value for key, value in pruned.items() if key != "metadata"}  # the server checks metadata
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(body))
        if error is not None:
            name = (obj.get("metadata") or {}).get("name", "")
            raise Invalid(self.kind, name, [(_path(error) or "<root>", error.message)])
        return pruned
