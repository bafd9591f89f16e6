import datetime

from c2d.provider.v1 import auth_pb2 as _auth_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateDatatokenRequest(_message.Message):
    __slots__ = ("did", "service_id", "symbol", "signature")
    DID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    did: str
    service_id: str
    symbol: str
    signature: _auth_pb2.ConsumerSignature
    def __init__(self, did: _Optional[str] = ..., service_id: _Optional[str] = ..., symbol: _Optional[str] = ..., signature: _Optional[_Union[_auth_pb2.ConsumerSignature, _Mapping]] = ...) -> None: ...

class CreateDatatokenResponse(_message.Message):
    __slots__ = ("datatoken_address",)
    DATATOKEN_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    datatoken_address: str
    def __init__(self, datatoken_address: _Optional[str] = ...) -> None: ...

class MintRequest(_message.Message):
    __slots__ = ("datatoken_address", "to_address", "amount", "signature")
    DATATOKEN_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TO_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    datatoken_address: str
    to_address: str
    amount: int
    signature: _auth_pb2.ConsumerSignature
    def __init__(self, datatoken_address: _Optional[str] = ..., to_address: _Optional[str] = ..., amount: _Optional[int] = ..., signature: _Optional[_Union[_auth_pb2.ConsumerSignature, _Mapping]] = ...) -> None: ...

class MintResponse(_message.Message):
    __slots__ = ("balance",)
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    balance: int
    def __init__(self, balance: _Optional[int] = ...) -> None: ...

class GetBalanceRequest(_message.Message):
    __slots__ = ("datatoken_address", "address")
    DATATOKEN_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    datatoken_address: str
    address: str
    def __init__(self, datatoken_address: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class GetBalanceResponse(_message.Message):
    __slots__ = ("balance",)
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    balance: int
    def __init__(self, balance: _Optional[int] = ...) -> None: ...

class StartOrderRequest(_message.Message):
    __slots__ = ("did", "service_id", "signature")
    DID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    did: str
    service_id: str
    signature: _auth_pb2.ConsumerSignature
    def __init__(self, did: _Optional[str] = ..., service_id: _Optional[str] = ..., signature: _Optional[_Union[_auth_pb2.ConsumerSignature, _Mapping]] = ...) -> None: ...

class Order(_message.Message):
    __slots__ = ("order_id", "did", "service_id", "consumer", "datatoken_address", "amount", "expires_at", "used_by_job_id")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    DID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    DATATOKEN_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    USED_BY_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    did: str
    service_id: str
    consumer: str
    datatoken_address: str
    amount: int
    expires_at: _timestamp_pb2.Timestamp
    used_by_job_id: str
    def __init__(self, order_id: _Optional[str] = ..., did: _Optional[str] = ..., service_id: _Optional[str] = ..., consumer: _Optional[str] = ..., datatoken_address: _Optional[str] = ..., amount: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., used_by_job_id: _Optional[str] = ...) -> None: ...

class StartOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: Order
    def __init__(self, order: _Optional[_Union[Order, _Mapping]] = ...) -> None: ...

class GetOrderRequest(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class GetOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: Order
    def __init__(self, order: _Optional[_Union[Order, _Mapping]] = ...) -> None: ...
