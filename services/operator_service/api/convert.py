"""Job rows -> c2d.common.v1.Job."""

from __future__ import annotations

from google.protobuf import json_format

from c2d.common.v1 import common_pb2
from plumbing.statuses import TEXT, Status, releases_orders
from services.operator_service.persistence.models import Job

ORDERS_RELEASED = "orders released: a new StartCompute with the same orders starts a new job"


def job(row: Job) -> common_pb2.Job:
    released = releases_orders(row.status, row.end_reason, row.error_code, bool(row.outcome), not row.algorithm_did)
    message = common_pb2.Job(
        job_id=row.job_id,
        owner=row.owner,
        dataset_dids=row.dataset_dids,
        algorithm_did=row.algorithm_did,
        environment_id=row.environment_id,
        status=common_pb2.JobStatus.ValueType(row.status),
        status_text=TEXT[Status(row.status)],
        end_reason=common_pb2.EndReason.ValueType(row.end_reason),
        error_code=row.error_code,
        # said where a consumer reads why the job ended
        error_message=f"{row.error_message}; {ORDERS_RELEASED}" if released else row.error_message,
        orders_released=released,
        results_did=row.results_did,
        viewers=row.viewers or [],
        sequence=row.sequence,
    )
    message.created_at.FromDatetime(row.created_at)
    if row.started_at:
        message.started_at.FromDatetime(row.started_at)
    if row.finished_at:
        message.finished_at.FromDatetime(row.finished_at)
    if row.results:
        json_format.ParseDict(row.results, message.results)
    if row.outcome:
        json_format.ParseDict(row.outcome, message.algorithm_outcome)
    return message
