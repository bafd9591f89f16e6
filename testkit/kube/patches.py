"""The three patch formats of the Kubernetes API, applied to plain dicts.

* ``application/merge-patch+json``: RFC 7386 (``None`` removes a key, lists
  are replaced whole).
* ``application/strategic-merge-patch+json`` (built-in kinds only; what the
  official client sends for a dict body): a merge patch in which the lists
  below merge their items by key, and ``finalizers`` merges as a set. Patch
  directives (``$patch``, ``$deleteFromPrimitiveList``, ...) are not
  emulated.
* ``application/json-patch+json``: RFC 6902 (a list of operations; applied
  with jsonpatch, which kmock brings).

Nothing here mutates its arguments: each returns a new object.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import jsonpatch
import jsonpointer

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"

# Lists of objects that a strategic merge patch merges by this key (the
# x-kubernetes-patch-merge-key of the 1.30 schemas, for the fields c2d writes).
MERGE_KEYS = {
    "conditions": "type",
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "env": "name",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
}
SET_LISTS = frozenset({"finalizers"})


class PatchError(ValueError):
    """A patch that cannot be applied (HTTP 422 for JSON patch, 400 otherwise)."""


def merge_patch(target: Any, patch: Any, *, strategic: bool = False) -> Any:
    """RFC 7386; with ``strategic``, the lists of MERGE_KEYS and SET_LISTS merge instead of being replaced."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        merges = strategic and isinstance(value, list) and isinstance(result.get(key), list)
        if value is None:
            result.pop(key, None)
        elif merges and key in MERGE_KEYS:
            result[key] = _merge_list_by_key(result[key], value, MERGE_KEYS[key])
        elif merges and key in SET_LISTS:
            result[key] = result[key] + [item for item in value if item not in result[key]]
        else:
            result[key] = merge_patch(result.get(key), value, strategic=strategic)
    return result


def _merge_list_by_key(items: list[Any], patch: list[Any], key: str) -> list[Any]:
    merged = list(items)
    for item in patch:
        if not isinstance(item, Mapping) or key not in item:
            raise PatchError(f"an item of a list merged by {key!r} lacks it: {item!r}")
        index = next(
            (i for i, old in enumerate(merged) if isinstance(old, Mapping) and old.get(key) == item[key]), None
        )
        if index is None:
            merged.append(copy.deepcopy(item))
        else:
            merged[index] = merge_patch(merged[index], item, strategic=True)
    return merged


def json_patch(target: Mapping[str, Any], operations: list[Any]) -> dict[str, Any]:
    try:
        return jsonpatch.apply_patch(copy.deepcopy(dict(target)), operations)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise PatchError(f"the JSON patch cannot be applied: {exc}") from None


def apply(target: Mapping[str, Any], patch: Any, content_type: str, *, custom: bool) -> dict[str, Any]:
    """Applies a PATCH body of the given content type; raises PatchError or LookupError (415)."""
    media = content_type.split(";", maxsplit=1)[0].strip().lower()
    if media == JSON_PATCH:
        if not isinstance(patch, list):
            raise PatchError("a JSON patch is a list of operations")
        return json_patch(target, patch)
    if not isinstance(patch, Mapping):
        raise PatchError(f"a {media} body is a JSON object")
    if media == MERGE_PATCH:
        return merge_patch(target, patch)
    if media == STRATEGIC_MERGE_PATCH and not custom:
        return merge_patch(target, patch, strategic=True)
    accepted = [JSON_PATCH, MERGE_PATCH] + ([] if custom else [STRATEGIC_MERGE_PATCH])
    raise LookupError(
        f"the body of the request was in an unknown format - accepted media types include: {', '.join(accepted)}"
    )
