"""The pod_publish program: upload the job's results, report the manifest.

Runs once per job with the job's token; talks to the engine's
JobAgentService and, when the job asks for its results as a new asset, to
the provider's AssetService with the provider's grant from the workflow.
Its log (the operator's publish.log) records each step with sizes and
durations. This module is the wiring: the storage configuration, the agent,
the provider client and the publishing domain.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any

from plumbing import pods, storage
from services.pod_publish.clients import agent, provider
from services.pod_publish.domain import publishing

log = logging.getLogger("c2d.pod_publish")


async def run(pod: pods.Pod, channel: Any) -> int:
    started = time.monotonic()
    job_agent = pods.JobAgent(pod, channel)
    workflow = (await job_agent.workflow()).workflow
    log.info("fetched the workflow in %.3f s", time.monotonic() - started)
    if os.environ.get("C2D_FETCH_ALGORITHM_LOG") == "1":
        # On Kubernetes the engine holds the algorithm's log (copied from its pod): it joins the results.
        size = await job_agent.fetch_algorithm_log(pod.data_root / "logs" / "algorithm.log")
        log.info("fetched the algorithm's log (%d bytes)", size)
    register = (
        functools.partial(provider.register_results_asset, workflow, pod.job_id)
        if workflow.publish_results_as_asset
        else None
    )
    # algorithm.log is the engine's (C2D_ADMIN_DIR); without one, where the DESIGN's layout puts it
    log_dir = pod.admin_dir or pod.data_root / "logs"
    outcome = await publishing.publish_results(
        pod.data_root, log_dir, pod.job_id, workflow.pack_outputs, storage.configured(), register
    )
    step = time.monotonic()
    await agent.report_outcome(job_agent, outcome)
    if outcome.manifest is None:
        return 1
    log.info("reported the manifest in %.3f s", time.monotonic() - step)
    files = outcome.manifest["files"]
    total = sum(int(f["size"]) for f in files)
    log.info("published %d files (%d bytes) in %.3f s", len(files), total, time.monotonic() - started)
    return 0


def main() -> None:
    pods.main("pod_publish", run)
