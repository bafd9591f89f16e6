"""Proto <-> domain conversions for the engine."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from c2d.common.v1 import common_pb2
from c2d.engine.v1 import engine_pb2
from plumbing import errors
from services.operator_engine.domain.changes import StateChange
from services.operator_engine.domain.jobs import EnvironmentSpec


def environment(
    env: EnvironmentSpec, engine_id: str, running: int, queued: int, sandboxed: bool
) -> common_pb2.Environment:
    return common_pb2.Environment(
        id=env.id,
        description=env.description,
        cpu_cores=env.cpu_cores,
        memory_bytes=env.memory_bytes,
        disk_bytes=env.disk_bytes,
        gpus=env.gpus,
        gpu_type=env.gpu_type,
        max_jobs=env.max_jobs,
        max_job_duration_seconds=env.max_job_duration_s,
        storage_expiry_seconds=env.storage_expiry_s,
        price_per_minute=env.price_per_minute,
        free=env.price_per_minute in ("", "0"),
        running_jobs=running,
        queued_jobs=queued,
        available=True,
        engine_id=engine_id,
        sandboxed=sandboxed,
    )


def manifest_to_json(manifest: common_pb2.ResultsManifest) -> dict[str, Any]:
    try:
        return json_format.MessageToDict(manifest, preserving_proto_field_name=True)
    except json_format.Error as exc:  # e.g. a published_at whose nanos are out of range
        raise errors.InvalidArgument(
            f"the results manifest cannot be read: {exc}", "results_invalid", field="results"
        ) from None


def manifest_from_json(data: dict[str, Any]) -> common_pb2.ResultsManifest:
    return json_format.ParseDict(data, common_pb2.ResultsManifest())


def state_change(change: StateChange) -> engine_pb2.StateChange:
    message = engine_pb2.StateChange(
        sequence=change.sequence,
        job_id=change.job_id,
        status=common_pb2.JobStatus.ValueType(change.status),
        end_reason=common_pb2.EndReason.ValueType(change.end_reason),
        error_code=change.error_code,
        error_message=change.error_message,
        results_did=change.results_did,
    )
    message.time.FromDatetime(change.time)
    if change.results is not None:
        message.results.CopyFrom(manifest_from_json(change.results))
    if change.outcome is not None:
        message.algorithm_outcome.CopyFrom(
            json_format.ParseDict(
                {k: v for k, v in change.outcome.items() if v is not None}, common_pb2.AlgorithmOutcome()
            )
        )
    return message
