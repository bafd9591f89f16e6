import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATUS_UNSPECIFIED: _ClassVar[JobStatus]
    JOB_STATUS_WARMING_UP: _ClassVar[JobStatus]
    JOB_STATUS_STARTED: _ClassVar[JobStatus]
    JOB_STATUS_CONFIGURING_VOLUMES: _ClassVar[JobStatus]
    JOB_STATUS_PROVISIONING_SUCCESS: _ClassVar[JobStatus]
    JOB_STATUS_DATA_PROVISIONING_FAILED: _ClassVar[JobStatus]
    JOB_STATUS_ALGORITHM_PROVISIONING_FAILED: _ClassVar[JobStatus]
    JOB_STATUS_RUNNING_ALGORITHM: _ClassVar[JobStatus]
    JOB_STATUS_ALGORITHM_FAILED: _ClassVar[JobStatus]
    JOB_STATUS_DISK_QUOTA_EXCEEDED: _ClassVar[JobStatus]
    JOB_STATUS_FILTERING_RESULTS: _ClassVar[JobStatus]
    JOB_STATUS_PUBLISHING_RESULTS: _ClassVar[JobStatus]
    JOB_STATUS_RESULTS_FETCH_FAILED: _ClassVar[JobStatus]
    JOB_STATUS_RESULTS_UPLOAD_FAILED: _ClassVar[JobStatus]
    JOB_STATUS_FINISHED: _ClassVar[JobStatus]

class EndReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    END_REASON_UNSPECIFIED: _ClassVar[EndReason]
    END_REASON_COMPLETED: _ClassVar[EndReason]
    END_REASON_STOPPED: _ClassVar[EndReason]
    END_REASON_TIMED_OUT: _ClassVar[EndReason]
    END_REASON_FAILED: _ClassVar[EndReason]
    END_REASON_EXPIRED_IN_QUEUE: _ClassVar[EndReason]

class ResultKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESULT_KIND_UNSPECIFIED: _ClassVar[ResultKind]
    RESULT_KIND_OUTPUT: _ClassVar[ResultKind]
    RESULT_KIND_ALGORITHM_LOG: _ClassVar[ResultKind]
JOB_STATUS_UNSPECIFIED: JobStatus
JOB_STATUS_WARMING_UP: JobStatus
JOB_STATUS_STARTED: JobStatus
JOB_STATUS_CONFIGURING_VOLUMES: JobStatus
JOB_STATUS_PROVISIONING_SUCCESS: JobStatus
JOB_STATUS_DATA_PROVISIONING_FAILED: JobStatus
JOB_STATUS_ALGORITHM_PROVISIONING_FAILED: JobStatus
JOB_STATUS_RUNNING_ALGORITHM: JobStatus
JOB_STATUS_ALGORITHM_FAILED: JobStatus
JOB_STATUS_DISK_QUOTA_EXCEEDED: JobStatus
JOB_STATUS_FILTERING_RESULTS: JobStatus
JOB_STATUS_PUBLISHING_RESULTS: JobStatus
JOB_STATUS_RESULTS_FETCH_FAILED: JobStatus
JOB_STATUS_RESULTS_UPLOAD_FAILED: JobStatus
JOB_STATUS_FINISHED: JobStatus
END_REASON_UNSPECIFIED: EndReason
END_REASON_COMPLETED: EndReason
END_REASON_STOPPED: EndReason
END_REASON_TIMED_OUT: EndReason
END_REASON_FAILED: EndReason
END_REASON_EXPIRED_IN_QUEUE: EndReason
RESULT_KIND_UNSPECIFIED: ResultKind
RESULT_KIND_OUTPUT: ResultKind
RESULT_KIND_ALGORITHM_LOG: ResultKind

class ResultFile(_message.Message):
    __slots__ = ("index", "path", "size", "sha256", "kind", "location", "content_type")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    index: int
    path: str
    size: int
    sha256: str
    kind: ResultKind
    location: str
    content_type: str
    def __init__(self, index: _Optional[int] = ..., path: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., kind: _Optional[_Union[ResultKind, str]] = ..., location: _Optional[str] = ..., content_type: _Optional[str] = ...) -> None: ...

class ResultsManifest(_message.Message):
    __slots__ = ("files", "storage", "published_at", "expired", "skipped_paths")
    FILES_FIELD_NUMBER: _ClassVar[int]
    STORAGE_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_PATHS_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedCompositeFieldContainer[ResultFile]
    storage: str
    published_at: _timestamp_pb2.Timestamp
    expired: bool
    skipped_paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, files: _Optional[_Iterable[_Union[ResultFile, _Mapping]]] = ..., storage: _Optional[str] = ..., published_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expired: _Optional[bool] = ..., skipped_paths: _Optional[_Iterable[str]] = ...) -> None: ...

class AlgorithmOutcome(_message.Message):
    __slots__ = ("exit_code", "signal", "oom_killed", "timed_out", "stopped", "duration_seconds")
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    OOM_KILLED_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    STOPPED_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    exit_code: int
    signal: int
    oom_killed: bool
    timed_out: bool
    stopped: bool
    duration_seconds: float
    def __init__(self, exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., oom_killed: _Optional[bool] = ..., timed_out: _Optional[bool] = ..., stopped: _Optional[bool] = ..., duration_seconds: _Optional[float] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "owner", "dataset_dids", "algorithm_did", "environment_id", "status", "status_text", "end_reason", "error_code", "error_message", "created_at", "started_at", "finished_at", "results", "algorithm_outcome", "results_did", "viewers", "sequence")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    DATASET_DIDS_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_DID_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_TEXT_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    RESULTS_DID_FIELD_NUMBER: _ClassVar[int]
    VIEWERS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    owner: str
    dataset_dids: _containers.RepeatedScalarFieldContainer[str]
    algorithm_did: str
    environment_id: str
    status: JobStatus
    status_text: str
    end_reason: EndReason
    error_code: str
    error_message: str
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    results: ResultsManifest
    algorithm_outcome: AlgorithmOutcome
    results_did: str
    viewers: _containers.RepeatedScalarFieldContainer[str]
    sequence: int
    def __init__(self, job_id: _Optional[str] = ..., owner: _Optional[str] = ..., dataset_dids: _Optional[_Iterable[str]] = ..., algorithm_did: _Optional[str] = ..., environment_id: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ..., status_text: _Optional[str] = ..., end_reason: _Optional[_Union[EndReason, str]] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., results: _Optional[_Union[ResultsManifest, _Mapping]] = ..., algorithm_outcome: _Optional[_Union[AlgorithmOutcome, _Mapping]] = ..., results_did: _Optional[str] = ..., viewers: _Optional[_Iterable[str]] = ..., sequence: _Optional[int] = ...) -> None: ...

class Environment(_message.Message):
    __slots__ = ("id", "description", "cpu_cores", "memory_bytes", "disk_bytes", "gpus", "gpu_type", "max_jobs", "max_job_duration_seconds", "storage_expiry_seconds", "price_per_minute", "free", "running_jobs", "queued_jobs", "available", "engine_id", "sandboxed")
    ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    GPU_TYPE_FIELD_NUMBER: _ClassVar[int]
    MAX_JOBS_FIELD_NUMBER: _ClassVar[int]
    MAX_JOB_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STORAGE_EXPIRY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PRICE_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    FREE_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_JOBS_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOXED_FIELD_NUMBER: _ClassVar[int]
    id: str
    description: str
    cpu_cores: float
    memory_bytes: int
    disk_bytes: int
    gpus: int
    gpu_type: str
    max_jobs: int
    max_job_duration_seconds: int
    storage_expiry_seconds: int
    price_per_minute: str
    free: bool
    running_jobs: int
    queued_jobs: int
    available: bool
    engine_id: str
    sandboxed: bool
    def __init__(self, id: _Optional[str] = ..., description: _Optional[str] = ..., cpu_cores: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., disk_bytes: _Optional[int] = ..., gpus: _Optional[int] = ..., gpu_type: _Optional[str] = ..., max_jobs: _Optional[int] = ..., max_job_duration_seconds: _Optional[int] = ..., storage_expiry_seconds: _Optional[int] = ..., price_per_minute: _Optional[str] = ..., free: _Optional[bool] = ..., running_jobs: _Optional[int] = ..., queued_jobs: _Optional[int] = ..., available: _Optional[bool] = ..., engine_id: _Optional[str] = ..., sandboxed: _Optional[bool] = ...) -> None: ...

class FileLocation(_message.Message):
    __slots__ = ("type", "url", "headers", "cid", "content", "checksum")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TYPE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    CID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    type: str
    url: str
    headers: _containers.ScalarMap[str, str]
    cid: str
    content: str
    checksum: str
    def __init__(self, type: _Optional[str] = ..., url: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ..., cid: _Optional[str] = ..., content: _Optional[str] = ..., checksum: _Optional[str] = ...) -> None: ...

class WorkflowAsset(_message.Message):
    __slots__ = ("did", "files", "ddo_json")
    DID_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    DDO_JSON_FIELD_NUMBER: _ClassVar[int]
    did: str
    files: _containers.RepeatedCompositeFieldContainer[FileLocation]
    ddo_json: str
    def __init__(self, did: _Optional[str] = ..., files: _Optional[_Iterable[_Union[FileLocation, _Mapping]]] = ..., ddo_json: _Optional[str] = ...) -> None: ...

class AlgorithmContainer(_message.Message):
    __slots__ = ("entrypoint", "image", "tag", "checksum")
    ENTRYPOINT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    entrypoint: str
    image: str
    tag: str
    checksum: str
    def __init__(self, entrypoint: _Optional[str] = ..., image: _Optional[str] = ..., tag: _Optional[str] = ..., checksum: _Optional[str] = ...) -> None: ...

class Workflow(_message.Message):
    __slots__ = ("datasets", "algorithm", "raw_algorithm", "container", "algorithm_files_checksum", "algo_custom_data_json", "allow_network", "max_duration_seconds", "pack_outputs", "publish_results_as_asset", "owner", "results_asset_grant", "provider_address", "trace_parent")
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    RAW_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FILES_CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    ALGO_CUSTOM_DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    ALLOW_NETWORK_FIELD_NUMBER: _ClassVar[int]
    MAX_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PACK_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_RESULTS_AS_ASSET_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    RESULTS_ASSET_GRANT_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TRACE_PARENT_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[WorkflowAsset]
    algorithm: WorkflowAsset
    raw_algorithm: str
    container: AlgorithmContainer
    algorithm_files_checksum: str
    algo_custom_data_json: str
    allow_network: bool
    max_duration_seconds: int
    pack_outputs: bool
    publish_results_as_asset: bool
    owner: str
    results_asset_grant: str
    provider_address: str
    trace_parent: str
    def __init__(self, datasets: _Optional[_Iterable[_Union[WorkflowAsset, _Mapping]]] = ..., algorithm: _Optional[_Union[WorkflowAsset, _Mapping]] = ..., raw_algorithm: _Optional[str] = ..., container: _Optional[_Union[AlgorithmContainer, _Mapping]] = ..., algorithm_files_checksum: _Optional[str] = ..., algo_custom_data_json: _Optional[str] = ..., allow_network: _Optional[bool] = ..., max_duration_seconds: _Optional[int] = ..., pack_outputs: _Optional[bool] = ..., publish_results_as_asset: _Optional[bool] = ..., owner: _Optional[str] = ..., results_asset_grant: _Optional[str] = ..., provider_address: _Optional[str] = ..., trace_parent: _Optional[str] = ...) -> None: ...
