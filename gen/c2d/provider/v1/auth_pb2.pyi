from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ConsumerSignature(_message.Message):
    __slots__ = ("address", "nonce", "signature")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    address: str
    nonce: int
    signature: str
    def __init__(self, address: _Optional[str] = ..., nonce: _Optional[int] = ..., signature: _Optional[str] = ...) -> None: ...
