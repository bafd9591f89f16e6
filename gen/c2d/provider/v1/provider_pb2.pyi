from c2d.common.v1 import common_pb2 as _common_pb2
from c2d.provider.v1 import auth_pb2 as _auth_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetNonceRequest(_message.Message):
    __slots__ = ("address",)
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    address: str
    def __init__(self, address: _Optional[str] = ...) -> None: ...

class GetNonceResponse(_message.Message):
    __slots__ = ("nonce",)
    NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: int
    def __init__(self, nonce: _Optional[int] = ...) -> None: ...

class GetProviderInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetProviderInfoResponse(_message.Message):
    __slots__ = ("fee_address", "encryption_public_key", "signing_public_key")
    FEE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNING_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    fee_address: str
    encryption_public_key: str
    signing_public_key: str
    def __init__(self, fee_address: _Optional[str] = ..., encryption_public_key: _Optional[str] = ..., signing_public_key: _Optional[str] = ...) -> None: ...

class ListComputeEnvironmentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListComputeEnvironmentsResponse(_message.Message):
    __slots__ = ("environments",)
    ENVIRONMENTS_FIELD_NUMBER: _ClassVar[int]
    environments: _containers.RepeatedCompositeFieldContainer[_common_pb2.Environment]
    def __init__(self, environments: _Optional[_Iterable[_Union[_common_pb2.Environment, _Mapping]]] = ...) -> None: ...

class AssetOrder(_message.Message):
    __slots__ = ("did", "service_id", "order_id")
    DID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    did: str
    service_id: str
    order_id: str
    def __init__(self, did: _Optional[str] = ..., service_id: _Optional[str] = ..., order_id: _Optional[str] = ...) -> None: ...

class RawAlgorithm(_message.Message):
    __slots__ = ("code", "container")
    CODE_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    code: str
    container: _common_pb2.AlgorithmContainer
    def __init__(self, code: _Optional[str] = ..., container: _Optional[_Union[_common_pb2.AlgorithmContainer, _Mapping]] = ...) -> None: ...

class ComputeSpec(_message.Message):
    __slots__ = ("dataset", "additional_datasets", "algorithm_asset", "raw_algorithm", "environment_id", "algorithm_parameters_json", "allow_network", "max_duration_seconds", "publish_results_as_asset", "viewers", "pack_outputs")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ADDITIONAL_DATASETS_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_ASSET_FIELD_NUMBER: _ClassVar[int]
    RAW_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_PARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    ALLOW_NETWORK_FIELD_NUMBER: _ClassVar[int]
    MAX_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_RESULTS_AS_ASSET_FIELD_NUMBER: _ClassVar[int]
    VIEWERS_FIELD_NUMBER: _ClassVar[int]
    PACK_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    dataset: AssetOrder
    additional_datasets: _containers.RepeatedCompositeFieldContainer[AssetOrder]
    algorithm_asset: AssetOrder
    raw_algorithm: RawAlgorithm
    environment_id: str
    algorithm_parameters_json: str
    allow_network: bool
    max_duration_seconds: int
    publish_results_as_asset: bool
    viewers: _containers.RepeatedScalarFieldContainer[str]
    pack_outputs: bool
    def __init__(self, dataset: _Optional[_Union[AssetOrder, _Mapping]] = ..., additional_datasets: _Optional[_Iterable[_Union[AssetOrder, _Mapping]]] = ..., algorithm_asset: _Optional[_Union[AssetOrder, _Mapping]] = ..., raw_algorithm: _Optional[_Union[RawAlgorithm, _Mapping]] = ..., environment_id: _Optional[str] = ..., algorithm_parameters_json: _Optional[str] = ..., allow_network: _Optional[bool] = ..., max_duration_seconds: _Optional[int] = ..., publish_results_as_asset: _Optional[bool] = ..., viewers: _Optional[_Iterable[str]] = ..., pack_outputs: _Optional[bool] = ...) -> None: ...

class InitializeComputeRequest(_message.Message):
    __slots__ = ("spec", "signature")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    spec: ComputeSpec
    signature: _auth_pb2.ConsumerSignature
    def __init__(self, spec: _Optional[_Union[ComputeSpec, _Mapping]] = ..., signature: _Optional[_Union[_auth_pb2.ConsumerSignature, _Mapping]] = ...) -> None: ...

class OrderRequirement(_message.Message):
    __slots__ = ("did", "service_id", "datatoken_address", "amount", "valid_order_id")
    DID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    DATATOKEN_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    VALID_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    did: str
    service_id: str
    datatoken_address: str
    amount: int
    valid_order_id: str
    def __init__(self, did: _Optional[str] = ..., service_id: _Optional[str] = ..., datatoken_address: _Optional[str] = ..., amount: _Optional[int] = ..., valid_order_id: _Optional[str] = ...) -> None: ...

class InitializeComputeResponse(_message.Message):
    __slots__ = ("orders",)
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    orders: _containers.RepeatedCompositeFieldContainer[OrderRequirement]
    def __init__(self, orders: _Optional[_Iterable[_Union[OrderRequirement, _Mapping]]] = ...) -> None: ...

class StartComputeRequest(_message.Message):
    __slots__ = ("spec", "signature")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    spec: ComputeSpec
    signature: _auth_pb2.ConsumerSignature
    def __init__(self, spec: _Optional[_Union[ComputeSpec, _Mapping]] = ..., signature: _Optional[_Union[_auth_pb2.ConsumerSignature, _Mapping]] = ...) -> None: ...

class StartComputeResponse(_message.Message):
    __slots__ = ("job_id", "job")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    job: _common_pb2.Job
    def __init__(self, job_id: _Optional[str] = ..., job: _Optional[_Union[_common_pb2.Job, _Mapping]] = ...) -> None: ...

class GetJobDetailsRequest(_message.Message):
    __slots__ = ("job_id", "signature")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    signature: _auth_pb2.ConsumerSignature
    def __init__(self, job_id: _Optional[str] = ..., signature: _Optional[_Union[_auth_pb2.ConsumerSignature, _Mapping]] = ...) -> None: ...

class SignedResults(_message.Message):
    __slots__ = ("statement_json", "signature", "public_key")
    STATEMENT_JSON_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    statement_json: str
    signature: str
    public_key: str
    def __init__(self, statement_json: _Optional[str] = ..., signature: _Optional[str] = ..., public_key: _Optional[str] = ...) -> None: ...

class GetJobDetailsResponse(_message.Message):
    __slots__ = ("job", "signed_results")
    JOB_FIELD_NUMBER: _ClassVar[int]
    SIGNED_RESULTS_FIELD_NUMBER: _ClassVar[int]
    job: _common_pb2.Job
    signed_results: SignedResults
    def __init__(self, job: _Optional[_Union[_common_pb2.Job, _Mapping]] = ..., signed_results: _Optional[_Union[SignedResults, _Mapping]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "signature", "after_sequence")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    signature: _auth_pb2.ConsumerSignature
    after_sequence: int
    def __init__(self, job_id: _Optional[str] = ..., signature: _Optional[_Union[_auth_pb2.ConsumerSignature, _Mapping]] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _common_pb2.Job
    def __init__(self, job: _Optional[_Union[_common_pb2.Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("signature", "statuses", "page_size", "page_token")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    signature: _auth_pb2.ConsumerSignature
    statuses: _containers.RepeatedScalarFieldContainer[_common_pb2.JobStatus]
    page_size: int
    page_token: str
    def __init__(self, signature: _Optional[_Union[_auth_pb2.ConsumerSignature, _Mapping]] = ..., statuses: _Optional[_Iterable[_Union[_common_pb2.JobStatus, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[_common_pb2.Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[_common_pb2.Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StopComputeRequest(_message.Message):
    __slots__ = ("job_id", "signature")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    signature: _auth_pb2.ConsumerSignature
    def __init__(self, job_id: _Optional[str] = ..., signature: _Optional[_Union[_auth_pb2.ConsumerSignature, _Mapping]] = ...) -> None: ...

class StopComputeResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _common_pb2.Job
    def __init__(self, job: _Optional[_Union[_common_pb2.Job, _Mapping]] = ...) -> None: ...

class DeleteComputeRequest(_message.Message):
    __slots__ = ("job_id", "signature")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    signature: _auth_pb2.ConsumerSignature
    def __init__(self, job_id: _Optional[str] = ..., signature: _Optional[_Union[_auth_pb2.ConsumerSignature, _Mapping]] = ...) -> None: ...

class DeleteComputeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetComputeResultRequest(_message.Message):
    __slots__ = ("job_id", "index", "offset", "signature")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    index: int
    offset: int
    signature: _auth_pb2.ConsumerSignature
    def __init__(self, job_id: _Optional[str] = ..., index: _Optional[int] = ..., offset: _Optional[int] = ..., signature: _Optional[_Union[_auth_pb2.ConsumerSignature, _Mapping]] = ...) -> None: ...

class GetComputeResultResponse(_message.Message):
    __slots__ = ("file", "data", "offset")
    FILE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    file: _common_pb2.ResultFile
    data: bytes
    offset: int
    def __init__(self, file: _Optional[_Union[_common_pb2.ResultFile, _Mapping]] = ..., data: _Optional[bytes] = ..., offset: _Optional[int] = ...) -> None: ...

class StreamJobLogsRequest(_message.Message):
    __slots__ = ("job_id", "follow", "signature", "offset")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    follow: bool
    signature: _auth_pb2.ConsumerSignature
    offset: int
    def __init__(self, job_id: _Optional[str] = ..., follow: _Optional[bool] = ..., signature: _Optional[_Union[_auth_pb2.ConsumerSignature, _Mapping]] = ..., offset: _Optional[int] = ...) -> None: ...

class StreamJobLogsResponse(_message.Message):
    __slots__ = ("data", "offset")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ...) -> None: ...
