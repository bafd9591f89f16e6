"""Checks on a c2d.common.v1.Workflow that every service receiving one makes,
and what of one may be kept at rest once the stages that read its secrets are over."""

from __future__ import annotations

import enum

from c2d.common.v1 import common_pb2
from plumbing import errors


def check_workflow(workflow: common_pb2.Workflow) -> common_pb2.Workflow:
    if not workflow.datasets:
        raise errors.InvalidArgument("the workflow names no dataset", "workflow_invalid")
    if not workflow.HasField("algorithm") and not workflow.raw_algorithm:
        raise errors.InvalidArgument("the workflow has no algorithm", "workflow_invalid")
    return workflow


class Secret(enum.Enum):
    """The parts of a workflow that must not outlive the stage that reads them
    (DESIGN, who may see what): stored decrypted only while a stage still needs them."""

    LOCATIONS = "locations"  # the decrypted file locations and their request headers: pod_config
    GRANT = "grant"  # the provider's results-asset grant: pod_publish


EVERY_SECRET = frozenset(Secret)


def redacted(workflow: bytes, keep: frozenset[Secret]) -> bytes:
    """The serialized workflow without the secrets that are not in `keep`.
    DIDs, DDOs, the container and the consumer's parameters stay, and of each
    file location what it was and what it must hash to (type and checksum)."""
    if keep >= EVERY_SECRET:
        return workflow
    message = common_pb2.Workflow.FromString(workflow)
    if Secret.LOCATIONS not in keep:
        assets = [*message.datasets, *([message.algorithm] if message.HasField("algorithm") else [])]
        for asset in assets:
            kept = [(location.type, location.checksum) for location in asset.files]
            del asset.files[:]
            for type_, checksum in kept:
                asset.files.add(type=type_, checksum=checksum)
    if Secret.GRANT not in keep:
        message.ClearField("results_asset_grant")
    return message.SerializeToString(deterministic=True)
