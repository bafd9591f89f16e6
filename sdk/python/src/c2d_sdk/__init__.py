"""c2d_sdk: publish datasets and algorithms, order, run compute-to-data jobs and download
their results from a c2d provider, asynchronously (AsyncClient) or blocking (Client).

    from c2d_sdk import Client, ComputeRequest, Signer

    with Client("127.0.0.1:50051", Signer.generate()) as c2d:
        job = c2d.start_compute(ComputeRequest(datasets=[dataset_did], algorithm=algorithm_did)).job

Every signed request follows docs/signing.md (``signing``); the generated
protobuf messages are the ``c2d`` package installed alongside.
"""

from . import assets, errors, results, signing
from .client import Asset, AsyncClient, ComputeRequest, DownloadedFile, PublishedAsset, connect
from .errors import C2DError, IntegrityError, InvalidDescription, Refused, Unreachable
from .signing import Signer
from .sync import Client

__version__ = "0.1.0"

__all__ = [
    "Asset",
    "AsyncClient",
    "C2DError",
    "Client",
    "ComputeRequest",
    "DownloadedFile",
    "IntegrityError",
    "InvalidDescription",
    "PublishedAsset",
    "Refused",
    "Signer",
    "Unreachable",
    "__version__",
    "assets",
    "connect",
    "errors",
    "results",
    "signing",
]
