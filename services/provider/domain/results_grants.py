"""Results-asset grants: what lets a job's pod_publish register its results as an asset.

Not a consumer, and not with the internal service token: that credential
opens the operator-service and the engine, and a pod should never hold it.
Instead StartCompute puts a *grant* in the job's workflow (the workflow
reaches only pod_config and pod_publish, through the engine, never the
algorithm): the provider's Ed25519 signature over {owner, the request key of
the orders that pay for the job, expiry}. RegisterResultsAsset checks the
provider's own signature (`open_grant`), that those orders started exactly
this job (`check_grant_pays_for`), that the job is owned by the grant's
owner (`check_grant_holder`) and still running. So a grant is good for one
job, one owner, while that job publishes, and nothing else; a leaked grant
cannot create assets for anyone else or after the job ended.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Sequence
from dataclasses import dataclass

from plumbing import errors, untrusted

from . import sealing
from .canonical import canonical_json_bytes

GRANT_PREFIX = "c2dgrant1"
# Domain separation: the same key signs results statements.
_GRANT_CONTEXT = b"c2d results-asset grant v1\n"
# The binding to a live job is the real limit; the expiry caps a leaked grant's life.
GRANT_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True)
class ResultsGrant:
    owner: str
    request_key: str
    expires: int


def mint_grant(keys: sealing.ProviderKeys, owner: str, request_key: str, now: float | None = None) -> str:
    payload = {
        "purpose": "results-asset",
        "owner": owner,
        "request": request_key,
        "expires": int(now if now is not None else time.time()) + GRANT_TTL_S,
    }
    body = canonical_json_bytes(payload)
    signature = sealing.sign_bytes(keys, _GRANT_CONTEXT + body)
    return f"{GRANT_PREFIX}.{base64.urlsafe_b64encode(body).decode().rstrip('=')}.{signature}"


def open_grant(keys: sealing.ProviderKeys, grant: str, now: float | None = None) -> ResultsGrant:
    """The grant's claims, once its signature and expiry check out."""
    refused = errors.Unauthenticated(
        "grant is not a results-asset grant of this provider (pass the job's Workflow.results_asset_grant)",
        "grant_invalid",
    )
    prefix, _, rest = grant.partition(".")
    encoded, _, signature = rest.partition(".")
    if prefix != GRANT_PREFIX or not encoded or not signature:
        raise refused
    try:
        body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (ValueError, binascii.Error):
        raise refused from None
    if not sealing.verify_bytes(keys.verify_key_hex, _GRANT_CONTEXT + body, signature):
        raise refused
    claims = untrusted.parse_json(body, "grant")  # signed by us: well-formed
    if claims.get("purpose") != "results-asset":
        raise refused
    if claims["expires"] < (now if now is not None else time.time()):
        raise errors.PermissionDenied("the results-asset grant expired", "grant_expired")
    return ResultsGrant(owner=claims["owner"], request_key=claims["request"], expires=claims["expires"])


def check_grant_pays_for(grant: ResultsGrant, job_id: str, jobs_of_orders: Sequence[str | None]) -> None:
    """Refuses a grant whose orders did not start `job_id`. StartCompute
    records the job on the orders it claimed under the grant's request key:
    `jobs_of_orders` is what those orders recorded (None: not yet)."""
    if not jobs_of_orders or any(j not in (job_id, None) for j in jobs_of_orders):
        raise errors.PermissionDenied(f"the grant is not for job {job_id}", "grant_wrong_job")
    if None in jobs_of_orders:  # StartCompute has not recorded the job yet: a moment's race
        raise errors.Unavailable(f"job {job_id} is still being recorded; try again", "job_not_recorded")


def check_grant_holder(grant: ResultsGrant, job_id: str, job_owner: str) -> None:
    if job_owner != grant.owner:
        raise errors.PermissionDenied(f"the grant is not for job {job_id}", "grant_wrong_job")
