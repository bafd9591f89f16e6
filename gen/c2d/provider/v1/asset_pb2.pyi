from c2d.common.v1 import common_pb2 as _common_pb2
from c2d.provider.v1 import auth_pb2 as _auth_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EncryptFilesRequest(_message.Message):
    __slots__ = ("files",)
    FILES_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedCompositeFieldContainer[_common_pb2.FileLocation]
    def __init__(self, files: _Optional[_Iterable[_Union[_common_pb2.FileLocation, _Mapping]]] = ...) -> None: ...

class EncryptFilesResponse(_message.Message):
    __slots__ = ("encrypted_files",)
    ENCRYPTED_FILES_FIELD_NUMBER: _ClassVar[int]
    encrypted_files: str
    def __init__(self, encrypted_files: _Optional[str] = ...) -> None: ...

class PublishAssetRequest(_message.Message):
    __slots__ = ("ddo_json", "salt", "signature")
    DDO_JSON_FIELD_NUMBER: _ClassVar[int]
    SALT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ddo_json: str
    salt: str
    signature: _auth_pb2.ConsumerSignature
    def __init__(self, ddo_json: _Optional[str] = ..., salt: _Optional[str] = ..., signature: _Optional[_Union[_auth_pb2.ConsumerSignature, _Mapping]] = ...) -> None: ...

class PublishAssetResponse(_message.Message):
    __slots__ = ("did",)
    DID_FIELD_NUMBER: _ClassVar[int]
    did: str
    def __init__(self, did: _Optional[str] = ...) -> None: ...

class GetAssetRequest(_message.Message):
    __slots__ = ("did",)
    DID_FIELD_NUMBER: _ClassVar[int]
    did: str
    def __init__(self, did: _Optional[str] = ...) -> None: ...

class GetAssetResponse(_message.Message):
    __slots__ = ("ddo_json", "owner")
    DDO_JSON_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    ddo_json: str
    owner: str
    def __init__(self, ddo_json: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class ListAssetsRequest(_message.Message):
    __slots__ = ("type", "owner", "page_size", "page_token")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    type: str
    owner: str
    page_size: int
    page_token: str
    def __init__(self, type: _Optional[str] = ..., owner: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class AssetSummary(_message.Message):
    __slots__ = ("did", "name", "type", "owner")
    DID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    did: str
    name: str
    type: str
    owner: str
    def __init__(self, did: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class ListAssetsResponse(_message.Message):
    __slots__ = ("assets", "next_page_token")
    ASSETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    assets: _containers.RepeatedCompositeFieldContainer[AssetSummary]
    next_page_token: str
    def __init__(self, assets: _Optional[_Iterable[_Union[AssetSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateAssetRequest(_message.Message):
    __slots__ = ("did", "ddo_json", "signature")
    DID_FIELD_NUMBER: _ClassVar[int]
    DDO_JSON_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    did: str
    ddo_json: str
    signature: _auth_pb2.ConsumerSignature
    def __init__(self, did: _Optional[str] = ..., ddo_json: _Optional[str] = ..., signature: _Optional[_Union[_auth_pb2.ConsumerSignature, _Mapping]] = ...) -> None: ...

class UpdateAssetResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RegisterResultsAssetRequest(_message.Message):
    __slots__ = ("job_id", "grant", "results")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    grant: str
    results: _common_pb2.ResultsManifest
    def __init__(self, job_id: _Optional[str] = ..., grant: _Optional[str] = ..., results: _Optional[_Union[_common_pb2.ResultsManifest, _Mapping]] = ...) -> None: ...

class RegisterResultsAssetResponse(_message.Message):
    __slots__ = ("did",)
    DID_FIELD_NUMBER: _ClassVar[int]
    did: str
    def __init__(self, did: _Optional[str] = ...) -> None: ...

class DownloadAssetFileRequest(_message.Message):
    __slots__ = ("did", "service_id", "index", "offset", "signature")
    DID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    did: str
    service_id: str
    index: int
    offset: int
    signature: _auth_pb2.ConsumerSignature
    def __init__(self, did: _Optional[str] = ..., service_id: _Optional[str] = ..., index: _Optional[int] = ..., offset: _Optional[int] = ..., signature: _Optional[_Union[_auth_pb2.ConsumerSignature, _Mapping]] = ...) -> None: ...

class DownloadAssetFileResponse(_message.Message):
    __slots__ = ("file", "data", "offset")
    FILE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    file: _common_pb2.ResultFile
    data: bytes
    offset: int
    def __init__(self, file: _Optional[_Union[_common_pb2.ResultFile, _Mapping]] = ..., data: _Optional[bytes] = ..., offset: _Optional[int] = ...) -> None: ...
