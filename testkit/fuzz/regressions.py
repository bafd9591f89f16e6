"""Requests the fuzzer found failing, by RPC name (Service/Method): each
replays as an @example of its RPC before any new example, in CI and in
bench/pressure.py. Each says what it was answered before its fix."""

from __future__ import annotations

import base64
import json

from google.protobuf import timestamp_pb2

from c2d.common.v1 import common_pb2
from c2d.engine.v1 import job_agent_pb2
from c2d.operator.v1 import operator_pb2
from c2d.provider.v1 import asset_pb2, ledger_pb2, provider_pb2
from testkit.fuzz.harness import Case

NUL_PAGE_TOKEN = base64.urlsafe_b64encode(json.dumps(["2026-01-01T00:00:00+00:00", "a\x00b"]).encode()).decode()
REGRESSIONS: dict[str, list[Case]] = {
    # INTERNAL: PostgreSQL text cannot hold NUL, and psycopg2 raised ValueError in the query.
    "AssetService/ListAssets": [
        Case(asset_pb2.ListAssetsRequest(type="\x00")),
        Case(asset_pb2.ListAssetsRequest(owner="0x\x00")),
    ],
    "LedgerService/GetOrder": [Case(ledger_pb2.GetOrderRequest(order_id="\x00"))],
    # INTERNAL: the operator-service's refusal echoed the 5000-character id, its status outgrew the
    # 8 KiB a client accepts in trailers, and reading the mangled status raised ValueError in the provider.
    "ProviderService/StreamJobLogs": [Case(provider_pb2.StreamJobLogsRequest(job_id="a" * 5000))],
    "ProviderService/GetJobDetails": [Case(provider_pb2.GetJobDetailsRequest(job_id="é" * 5000))],
    # RESOURCE_EXHAUSTED "received metadata size exceeds soft limit": the refusal echoed the whole DID.
    "AssetService/GetAsset": [Case(asset_pb2.GetAssetRequest(did="did:op:" + "f" * 10_000))],
    # INTERNAL: a page token (base64 of JSON) whose job id holds "\u0000" reached PostgreSQL.
    "OperatorService/ListJobs": [Case(operator_pb2.ListJobsRequest(page_token=NUL_PAGE_TOKEN))],
    "ProviderService/ListJobs": [Case(provider_pb2.ListJobsRequest(page_token=NUL_PAGE_TOKEN))],
    # INTERNAL: json_format could not write a Timestamp whose nanos are out of range.
    "JobAgentService/ReportResults": [
        Case(
            job_agent_pb2.ReportResultsRequest(
                results=common_pb2.ResultsManifest(
                    storage="local", published_at=timestamp_pb2.Timestamp(nanos=-(1 << 31))
                )
            ),
            held_job=True,
        ),
    ],
}
