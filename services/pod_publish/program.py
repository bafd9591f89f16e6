"""The pod_publish program: upload the job's results, report the manifest.

Runs once per job with the job's token; talks only to the engine's
JobAgentService. Its log (the operator's publish.log) records each step with
sizes and durations.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import grpc
from google.protobuf import json_format

from c2d.common.v1 import common_pb2
from c2d.engine.v1 import job_agent_pb2, job_agent_pb2_grpc
from plumbing import auth, storage
from services.pod_publish import publishing

log = logging.getLogger("c2d.pod_publish")
RESULTS_UPLOAD_FAILED = 62


async def run(job_id: str, token: str, agent_address: str, data_root: Path) -> int:
    metadata = auth.bearer(token)
    async with grpc.aio.insecure_channel(agent_address) as channel:
        agent = job_agent_pb2_grpc.JobAgentServiceStub(channel)
        response = await agent.GetWorkflow(job_agent_pb2.GetWorkflowRequest(job_id=job_id), metadata=metadata)
        started = time.monotonic()
        try:
            store = storage.open_store(storage.configured())
            with tempfile.TemporaryDirectory(prefix="c2d-publish-") as scratch:
                sources = publishing.collect(data_root, response.workflow.pack_outputs, Path(scratch))
                log.info("publishing %d files (%d bytes) to %s storage", len(sources),
                         sum(s.file.stat().st_size for s in sources), store.kind)
                manifest = await asyncio.to_thread(publishing.publish, store, job_id, sources)
        except (publishing.PublishFailed, storage.StorageError) as exc:
            log.error("%s", exc)
            await agent.ReportProgress(
                job_agent_pb2.ReportProgressRequest(
                    job_id=job_id, status=RESULTS_UPLOAD_FAILED,  # type: ignore[arg-type]
                    error_code="results_upload_failed",
                    message=str(exc) if isinstance(exc, publishing.PublishFailed) else f"results upload failed: {exc}",
                ),
                metadata=metadata,
            )
            return 1
        results = json_format.ParseDict(manifest, common_pb2.ResultsManifest())
        await agent.ReportResults(job_agent_pb2.ReportResultsRequest(job_id=job_id, results=results), metadata=metadata)
        log.info("published %d files in %.3f s", len(results.files), time.monotonic() - started)
    return 0


def main() -> None:
    logging.basicConfig(level=os.environ.get("C2D_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(message)s")
    try:
        env = os.environ
        code = asyncio.run(run(env["C2D_JOB_ID"], env["C2D_JOB_TOKEN"], env["C2D_AGENT_ADDRESS"], Path(env["C2D_DATA_ROOT"])))
    except KeyError as missing:
        print(f"pod_publish: environment variable {missing} is required", file=sys.stderr)
        code = 2
    sys.exit(code)
