"""The context a grpc.aio servicer method is handed, typed as gen/'s
*_pb2_grpc.pyi declare it (mypy-protobuf, async only), so that a servicer
method overrides its generated base exactly:

    async def GetJob(
        self, request: GetJobRequest, context: UnaryContext[GetJobRequest, GetJobResponse]
    ) -> GetJobResponse: ...

    async def WatchJobs(
        self, request: WatchJobsRequest, context: StreamContext[WatchJobsRequest, WatchJobsResponse]
    ) -> AsyncIterator[WatchJobsResponse]: ...
"""

from collections.abc import AsyncIterator, Awaitable
from typing import TypeAlias, TypeVar

import grpc

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")

# A method that answers once (unary response).
UnaryContext: TypeAlias = grpc.aio.ServicerContext[_Request, Awaitable[_Response]]
# A method that streams its answers (an async generator).
StreamContext: TypeAlias = grpc.aio.ServicerContext[_Request, AsyncIterator[_Response]]
