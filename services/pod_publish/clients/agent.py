"""pod_publish's report to the engine's JobAgentService: the manifest, or why publishing failed."""

from __future__ import annotations

from google.protobuf import json_format

from c2d.common.v1 import common_pb2
from plumbing import pods
from services.pod_publish.domain import publishing


async def report_outcome(agent: pods.JobAgent, outcome: publishing.PublishOutcome) -> None:
    if outcome.manifest is None:
        await agent.report_progress(publishing.FAILED_STATUS, outcome.error_code, outcome.message)
        return
    results = json_format.ParseDict(outcome.manifest, common_pb2.ResultsManifest())
    await agent.report_results(results, outcome.results_did)
