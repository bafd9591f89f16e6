from c2d.common.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetWorkflowRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetWorkflowResponse(_message.Message):
    __slots__ = ("job_id", "workflow", "environment")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    workflow: _common_pb2.Workflow
    environment: _common_pb2.Environment
    def __init__(self, job_id: _Optional[str] = ..., workflow: _Optional[_Union[_common_pb2.Workflow, _Mapping]] = ..., environment: _Optional[_Union[_common_pb2.Environment, _Mapping]] = ...) -> None: ...

class ReportProgressRequest(_message.Message):
    __slots__ = ("job_id", "status", "error_code", "message", "staged_bytes")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STAGED_BYTES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: _common_pb2.JobStatus
    error_code: str
    message: str
    staged_bytes: int
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.JobStatus, str]] = ..., error_code: _Optional[str] = ..., message: _Optional[str] = ..., staged_bytes: _Optional[int] = ...) -> None: ...

class ReportProgressResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReportResultsRequest(_message.Message):
    __slots__ = ("job_id", "results", "results_did")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_DID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    results: _common_pb2.ResultsManifest
    results_did: str
    def __init__(self, job_id: _Optional[str] = ..., results: _Optional[_Union[_common_pb2.ResultsManifest, _Mapping]] = ..., results_did: _Optional[str] = ...) -> None: ...

class ReportResultsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
