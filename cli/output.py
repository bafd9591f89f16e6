"""What the CLI prints: the stable --json shapes (docs/cli.md) and the same data for people."""

from __future__ import annotations

import json
import sys
from typing import Any, Literal

from google.protobuf import json_format

from c2d.common.v1 import common_pb2
from c2d_sdk import Asset, DownloadedFile, PublishedAsset


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
    sys.stdout.flush()


def _time(job: common_pb2.Job, name: Literal["created_at", "started_at", "finished_at"]) -> str | None:
    return getattr(job, name).ToJsonString() if job.HasField(name) else None


def _end_reason(value: int) -> str:
    known = value in common_pb2.EndReason.values()
    name = common_pb2.EndReason.Name(common_pb2.EndReason.ValueType(value)) if known else ""
    return name.removeprefix("END_REASON_").lower().replace("unspecified", "")


def _kind(value: int | str) -> str:
    name = common_pb2.ResultKind.Name(common_pb2.ResultKind.ValueType(value)) if isinstance(value, int) else value
    return {"RESULT_KIND_ALGORITHM_LOG": "log"}.get(name, "output")


def job(job: common_pb2.Job) -> dict[str, Any]:
    """A job: status as Ocean's number, end_reason one of "", completed, stopped, timed_out, failed,
    expired_in_queue; times RFC 3339 or null."""
    return {
        "job_id": job.job_id,
        "owner": job.owner,
        "status": int(job.status),
        "status_text": job.status_text,
        "end_reason": _end_reason(job.end_reason),
        "error_code": job.error_code,
        "error_message": job.error_message,
        "dataset_dids": list(job.dataset_dids),
        "algorithm_did": job.algorithm_did,
        "environment_id": job.environment_id,
        "created_at": _time(job, "created_at"),
        "started_at": _time(job, "started_at"),
        "finished_at": _time(job, "finished_at"),
        "results": [
            {"index": f.index, "path": f.path, "size": f.size, "sha256": f.sha256, "kind": _kind(f.kind)}
            for f in job.results.files
        ],
        "results_did": job.results_did,
    }


def environment(env: common_pb2.Environment) -> dict[str, Any]:
    data = json_format.MessageToDict(env, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    for key in ("memory_bytes", "disk_bytes", "max_job_duration_seconds", "storage_expiry_seconds"):
        data[key] = int(data[key])
    return data


def published(asset: PublishedAsset) -> dict[str, Any]:
    return {
        "did": asset.did,
        "type": asset.type,
        "service_id": asset.service_id,
        "datatoken": asset.datatoken,
        "files_checksum": asset.files_checksum,
        "container_checksum": asset.container_checksum,
    }


def asset(found: Asset) -> dict[str, Any]:
    return {"did": found.did, "owner": found.owner, "type": found.type, "name": found.name, "ddo": found.ddo}


def downloaded(file: DownloadedFile) -> dict[str, Any]:
    return {
        "index": file.index,
        "path": file.path,
        "saved_to": str(file.saved_to),
        "size": file.size,
        "sha256": file.sha256,
        "kind": _kind(file.kind),
    }
