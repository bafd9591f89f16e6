import datetime

from c2d.common.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListEnvironmentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListEnvironmentsResponse(_message.Message):
    __slots__ = ("engine_id", "environments")
    ENGINE_ID_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENTS_FIELD_NUMBER: _ClassVar[int]
    engine_id: str
    environments: _containers.RepeatedCompositeFieldContainer[_common_pb2.Environment]
    def __init__(self, engine_id: _Optional[str] = ..., environments: _Optional[_Iterable[_Union[_common_pb2.Environment, _Mapping]]] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("job_id", "environment_id", "workflow")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    environment_id: str
    workflow: _common_pb2.Workflow
    def __init__(self, job_id: _Optional[str] = ..., environment_id: _Optional[str] = ..., workflow: _Optional[_Union[_common_pb2.Workflow, _Mapping]] = ...) -> None: ...

class SubmitJobResponse(_message.Message):
    __slots__ = ("created",)
    CREATED_FIELD_NUMBER: _ClassVar[int]
    created: bool
    def __init__(self, created: _Optional[bool] = ...) -> None: ...

class SubmitJobsRequest(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[SubmitJobRequest]
    def __init__(self, jobs: _Optional[_Iterable[_Union[SubmitJobRequest, _Mapping]]] = ...) -> None: ...

class SubmitJobsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SubmitJobResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SubmitJobResult, _Mapping]]] = ...) -> None: ...

class SubmitJobResult(_message.Message):
    __slots__ = ("job_id", "created", "error_code", "error_message")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    created: bool
    error_code: str
    error_message: str
    def __init__(self, job_id: _Optional[str] = ..., created: _Optional[bool] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ...) -> None: ...

class StopJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class StopJobResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.JobStatus
    def __init__(self, status: _Optional[_Union[_common_pb2.JobStatus, str]] = ...) -> None: ...

class DeleteJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DeleteJobResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StreamStateChangesRequest(_message.Message):
    __slots__ = ("after_sequence", "heartbeat_seconds")
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    after_sequence: int
    heartbeat_seconds: int
    def __init__(self, after_sequence: _Optional[int] = ..., heartbeat_seconds: _Optional[int] = ...) -> None: ...

class StateChange(_message.Message):
    __slots__ = ("sequence", "job_id", "status", "end_reason", "error_code", "error_message", "time", "results", "algorithm_outcome", "results_did")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    RESULTS_DID_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    job_id: str
    status: _common_pb2.JobStatus
    end_reason: _common_pb2.EndReason
    error_code: str
    error_message: str
    time: _timestamp_pb2.Timestamp
    results: _common_pb2.ResultsManifest
    algorithm_outcome: _common_pb2.AlgorithmOutcome
    results_did: str
    def __init__(self, sequence: _Optional[int] = ..., job_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.JobStatus, str]] = ..., end_reason: _Optional[_Union[_common_pb2.EndReason, str]] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., results: _Optional[_Union[_common_pb2.ResultsManifest, _Mapping]] = ..., algorithm_outcome: _Optional[_Union[_common_pb2.AlgorithmOutcome, _Mapping]] = ..., results_did: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("engine_id", "latest_sequence", "environments")
    ENGINE_ID_FIELD_NUMBER: _ClassVar[int]
    LATEST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENTS_FIELD_NUMBER: _ClassVar[int]
    engine_id: str
    latest_sequence: int
    environments: _containers.RepeatedCompositeFieldContainer[_common_pb2.Environment]
    def __init__(self, engine_id: _Optional[str] = ..., latest_sequence: _Optional[int] = ..., environments: _Optional[_Iterable[_Union[_common_pb2.Environment, _Mapping]]] = ...) -> None: ...

class StreamStateChangesResponse(_message.Message):
    __slots__ = ("changes", "heartbeat")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    changes: StateChanges
    heartbeat: Heartbeat
    def __init__(self, changes: _Optional[_Union[StateChanges, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class StateChanges(_message.Message):
    __slots__ = ("changes",)
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[StateChange]
    def __init__(self, changes: _Optional[_Iterable[_Union[StateChange, _Mapping]]] = ...) -> None: ...

class StreamJobLogsRequest(_message.Message):
    __slots__ = ("job_id", "follow", "offset")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    follow: bool
    offset: int
    def __init__(self, job_id: _Optional[str] = ..., follow: _Optional[bool] = ..., offset: _Optional[int] = ...) -> None: ...

class StreamJobLogsResponse(_message.Message):
    __slots__ = ("data", "offset")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ...) -> None: ...
