"""pod_config's calls to the engine's JobAgentService: the job to stage in, its outcome out.

The workflow message becomes the domain's `StagingRequest` here, so the
domain never sees protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass

from c2d.common.v1 import common_pb2
from plumbing import fetching, pods, untrusted
from services.pod_config.domain import staging


@dataclass(frozen=True)
class StagingJob:
    request: staging.StagingRequest
    disk_bytes: int  # the environment's disk; 0 when it names none


async def fetch_staging_job(agent: pods.JobAgent) -> StagingJob:
    response = await agent.workflow()
    return StagingJob(staging_request(response.workflow), response.environment.disk_bytes)


def staging_request(workflow: common_pb2.Workflow) -> staging.StagingRequest:
    def asset(message: common_pb2.WorkflowAsset) -> staging.AssetToStage:
        return staging.AssetToStage(
            did=message.did,
            files=tuple(fetching.source_of(f) for f in message.files),
            ddo_json=message.ddo_json,
        )

    return staging.StagingRequest(
        datasets=tuple(asset(d) for d in workflow.datasets),
        algorithm=asset(workflow.algorithm) if workflow.HasField("algorithm") else None,
        raw_algorithm=workflow.raw_algorithm,
        algorithm_files_checksum=workflow.algorithm_files_checksum,
        algo_custom_data=untrusted.parse_json(workflow.algo_custom_data_json or "{}", "algo_custom_data_json"),
    )


async def report_outcome(agent: pods.JobAgent, outcome: staging.StagingOutcome) -> None:
    staged_bytes = sum(f.size for f in outcome.files) if outcome.ok else 0
    await agent.report_progress(outcome.status, outcome.error_code, outcome.reason, staged_bytes)
