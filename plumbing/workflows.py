"""Checks on a c2d.common.v1.Workflow that every service receiving one makes."""

from __future__ import annotations

from c2d.common.v1 import common_pb2
from plumbing import errors


def check_workflow(workflow: common_pb2.Workflow) -> common_pb2.Workflow:
    if not workflow.datasets:
        raise errors.InvalidArgument("the workflow names no dataset", "workflow_invalid")
    if not workflow.HasField("algorithm") and not workflow.raw_algorithm:
        raise errors.InvalidArgument("the workflow has no algorithm", "workflow_invalid")
    return workflow
