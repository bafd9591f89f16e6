"""Results as a new asset: the DDO a job's results are registered as.

A dataset DDO owned by the job's owner, with one "access" service whose
files (sealed for this provider, type "results") are the results manifest's
storage locations. The DID is derived from the owner and the job id, so a
retried registration returns the same DID. Only the owner may download its
files, through the provider (DownloadAssetFile); nobody sees the locations.
Who may register is the grant's business (results_grants.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import ddos, sealing

RESULTS_SERVICE = "results"
RESULTS_FILE_TYPE = "results"  # a location in this provider's results storage


def results_did(owner: str, job_id: str) -> str:
    return ddos.derive_did(owner, f"c2d-results:{job_id}")


def results_ddo(
    *,
    job_id: str,
    owner: str,
    dataset_dids: Sequence[str],
    algorithm_did: str,
    files: list[dict[str, Any]],
    provider_public_key_hex: str,
    service_endpoint: str,
) -> dict[str, Any]:
    """The results asset's DDO (without its id; see `results_did`)."""
    did = results_did(owner, job_id)
    return {
        "version": "4.1.0",
        "metadata": {
            "type": "dataset",
            "name": f"Results of compute job {job_id}",
            "author": owner,
            "license": "proprietary",
            "description": f"Results of {algorithm_did or 'a raw algorithm'} on {', '.join(dataset_dids)}",
            "additionalInformation": {
                "c2dResults": {
                    "jobId": job_id,
                    "datasetDids": list(dataset_dids),
                    "algorithmDid": algorithm_did,
                },
            },
        },
        "services": [
            {
                "id": RESULTS_SERVICE,
                "type": "access",
                "timeout": 0,
                "files": sealing.seal_files(provider_public_key_hex, files),
                "datatokenAddress": ddos.datatoken_address(did, RESULTS_SERVICE),
                "serviceEndpoint": service_endpoint,
            }
        ],
        "credentials": {"allow": [{"type": "address", "values": [owner]}]},
    }
