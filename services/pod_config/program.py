"""The pod_config program: fetch the job's workflow, stage it, report.

Runs once per job (a local process or a Kubernetes pod). It holds no
database credentials: it talks to the engine's JobAgentService with its
job's token, and its log (the operator's configure.log) never names a URL.
This module is the wiring: settings, the fetchers, the agent and the
staging domain.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from plumbing import pods, settings, storage
from plumbing.settings import setting
from services.pod_config.clients import agent, fetching
from services.pod_config.domain import staging

log = logging.getLogger("c2d.pod_config")

# The disk a job gets when its environment names none.
UNBOUNDED_DISK_BYTES = 1 << 40


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


def staging_limits(config: StagingSettings, disk_bytes: int) -> staging.StagingLimits:
    disk = disk_bytes or UNBOUNDED_DISK_BYTES
    return staging.StagingLimits(
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
