"""The pod_config program: fetch the job's workflow, stage it, report.

Runs once per job (a local process or a Kubernetes pod). It holds no
database credentials: it talks to the engine's JobAgentService with its
job's token, and its log (the operator's configure.log) never names a URL.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from c2d.common.v1 import common_pb2
from c2d.engine.v1 import job_agent_pb2, job_agent_pb2_grpc
from plumbing import auth, pods, settings, storage
from plumbing.settings import setting
from services.pod_config import fetching, staging

log = logging.getLogger("c2d.pod_config")


@dataclass(frozen=True)
class StagingSettings:
    max_file_bytes: int = setting(0, "largest single file in bytes (0 = the environment's disk)")
    connect_timeout_s: float = setting(10.0, "TCP/TLS connect timeout per download")
    idle_timeout_s: float = setting(30.0, "a download receiving nothing for this long fails")
    max_retries: int = setting(3, "retries of transient failures (reset, 5xx, 429)")
    max_redirects: int = setting(5, "HTTP redirects followed")
    parallelism: int = setting(4, "files downloaded at once")
    allow_hosts: tuple[str, ...] = setting((), "hosts or CIDRs exempt from the private-address guard")
    blocked_cidrs: tuple[str, ...] = setting((), "extra ranges to refuse, e.g. the cluster's service range")


def staging_request(workflow: common_pb2.Workflow) -> staging.StagingRequest:
    def asset(message: common_pb2.WorkflowAsset) -> staging.AssetToStage:
        return staging.AssetToStage(
            did=message.did,
            files=tuple(
                staging.FileSource(
                    type=f.type, url=f.url, headers=dict(f.headers), cid=f.cid, content=f.content, checksum=f.checksum
                )
                for f in message.files
            ),
            ddo_json=message.ddo_json,
        )

    return staging.StagingRequest(
        datasets=tuple(asset(d) for d in workflow.datasets),
        algorithm=asset(workflow.algorithm) if workflow.HasField("algorithm") else None,
        raw_algorithm=workflow.raw_algorithm,
        algorithm_files_checksum=workflow.algorithm_files_checksum,
        algo_custom_data=json.loads(workflow.algo_custom_data_json or "{}"),
    )


async def run(pod: pods.Pod, channel: Any) -> int:
    config = settings.load(StagingSettings, "C2D_STAGING")
    metadata = auth.bearer(pod.token)
    agent = job_agent_pb2_grpc.JobAgentServiceStub(channel)
    response = await agent.GetWorkflow(job_agent_pb2.GetWorkflowRequest(job_id=pod.job_id), metadata=metadata)
    disk = response.environment.disk_bytes or (1 << 40)
    limits = staging.StagingLimits(
        max_file_bytes=config.max_file_bytes or disk,
        max_total_bytes=disk,
        connect_timeout_s=config.connect_timeout_s,
        idle_timeout_s=config.idle_timeout_s,
        max_retries=config.max_retries,
        max_redirects=config.max_redirects,
        parallelism=config.parallelism,
        allow_hosts=config.allow_hosts,
        blocked_cidrs=config.blocked_cidrs,
    )
    fetchers = fetching.default_fetchers(storage_config=storage.configured())
    outcome = await staging.stage(staging_request(response.workflow), pod.data_root, limits, fetchers, log)
    log.info("staging ended with status %d %s", outcome.status, outcome.reason)
    await agent.ReportProgress(
        job_agent_pb2.ReportProgressRequest(
            job_id=pod.job_id,
            status=outcome.status,
            error_code=outcome.error_code,
            message=outcome.reason,  # type: ignore[arg-type]
        ),
        metadata=metadata,
    )
    return 0 if outcome.ok else 1


def main() -> None:
    pods.main("pod_config", run)
