"""The pod_config program: fetch the job's workflow, stage it, report.

Runs once per job (a local process or a Kubernetes pod). It holds no
database credentials: it talks to the engine's JobAgentService with its
job's token, and its log (the operator's configure.log) never names a URL.
This module is the wiring: settings, the fetchers, the agent and the
staging domain.
"""

from __future__ import annotations

import logging
from typing import Any

from plumbing import fetching, pods, settings, storage
from plumbing.fetching import StagingSettings, staging_limits
from services.pod_config.clients import agent
from services.pod_config.domain import staging

log = logging.getLogger("c2d.pod_config")


async def run(pod: pods.Pod, channel: Any) -> int:
    config = settings.load(StagingSettings, "C2D_STAGING")
    job_agent = pods.JobAgent(pod, channel)
    job = await agent.fetch_staging_job(job_agent)
    fetchers = fetching.default_fetchers(storage_config=storage.configured())
    outcome = await staging.stage(job.request, pod.data_root, staging_limits(config, job.disk_bytes), fetchers, log)
    log.info("staging ended with status %d %s", outcome.status, outcome.reason)
    await agent.report_outcome(job_agent, outcome)
    return 0 if outcome.ok else 1


def main() -> None:
    pods.main("pod_config", run)
