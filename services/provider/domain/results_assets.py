"""Results as a new asset: the DDO a job's results are registered as.

A dataset DDO owned by the job's owner, with one "access" service whose
files are results locations this provider issued (file_locations.py:
signed for the job, its owner and this DID, then sealed), so only the
provider can read them and nobody can make one. The DID is derived from the
owner and the job id, so a retried registration returns the same DID. Who
may register is the grant's business (results_grants.py).

Nothing about the job is public (DESIGN.md, "Who may see what"): the DDO
names no job id, no input and no location, and a results asset is stored as
kind RESULTS_KIND, which ListAssets never lists. The job id, its inputs and
its results stay in the job record, for its owner and viewers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import ddos, file_locations, sealing

RESULTS_SERVICE = "results"
RESULTS_NAME = "Compute job results"
# The kind a results asset is stored as, beside "dataset" and "algorithm":
# its DDO says "dataset" (Ocean's shape), but no listing shows it.
RESULTS_KIND = "results"


def results_did(owner: str, job_id: str) -> str:
    return ddos.derive_did(owner, f"c2d-results:{job_id}")


def results_ddo(
    keys: sealing.ProviderKeys,
    *,
    job_id: str,
    owner: str,
    files: Sequence[Mapping[str, Any]],
    service_endpoint: str,
) -> dict[str, Any]:
    """The results asset's DDO (without its id; see `results_did`)."""
    did = results_did(owner, job_id)
    issued = file_locations.issue_results_locations(keys, job_id=job_id, owner=owner, did=did, files=files)
    return {
        "version": "4.1.0",
        "metadata": {"type": "dataset", "name": RESULTS_NAME, "author": owner, "license": "proprietary"},
        "services": [
            {
                "id": RESULTS_SERVICE,
                "type": "access",
                "timeout": 0,
                "files": sealing.seal_files(keys.public_key_hex, issued),
                "datatokenAddress": ddos.datatoken_address(did, RESULTS_SERVICE),
                "serviceEndpoint": service_endpoint,
            }
        ],
        "credentials": {"allow": [{"type": "address", "values": [owner]}]},
    }
