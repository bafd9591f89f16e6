"""The domain's store ports (`ports.LinkStore`, `ports.ExpiryStore`,
`ports.ResultsStore`) on one Database: each call is one transaction of the
`jobs` functions, run in the database's threads."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from google.protobuf import json_format

from c2d.common.v1 import common_pb2
from plumbing.database import Database
from services.operator_service.domain.ports import IncomingChange, JobToSubmit, Refusal, Settlement
from services.operator_service.persistence import jobs
from services.operator_service.persistence.models import Engine, Job


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- ports.LinkStore -----------------------------------------------------------

    async def register_engine(self, engine_id: str, address: str) -> int:
        return await self.db.run(lambda s: jobs.ensure_engine(s, engine_id, address))

    async def apply_changes(self, engine_id: str, changes: Sequence[IncomingChange]) -> list[Job]:
        return await self.db.run(lambda s: jobs.apply_changes(s, engine_id, changes))

    async def record_heartbeat(self, engine_id: str, environments: Sequence[common_pb2.Environment]) -> None:
        stored = [json_format.MessageToDict(env, preserving_proto_field_name=True) for env in environments]
        await self.db.run(lambda s: jobs.record_heartbeat(s, engine_id, stored))

    async def claim_waiting(
        self, engine_id: str, claim: str, now: datetime, stale_before: datetime, limit: int
    ) -> list[JobToSubmit]:
        return await self.db.run(lambda s: jobs.claim_waiting(s, engine_id, claim, now, stale_before, limit))

    async def finish_dispatch(self, claim: str, job_ids: Sequence[str], refusals: Sequence[Refusal]) -> Settlement:
        return await self.db.run(lambda s: jobs.finish_dispatch(s, claim, job_ids, refusals))

    async def release_claim(self, claim: str, job_ids: Sequence[str] | None = None) -> None:
        await self.db.run(lambda s: jobs.release_claim(s, claim, job_ids))

    async def expire_waiting(
        self, engine_id: str, created_before: datetime, stale_before: datetime, message: str
    ) -> list[Job]:
        return await self.db.run(
            lambda s: jobs.expire_undispatched(s, engine_id, created_before, stale_before, message)
        )

    # -- ports.ExpiryStore -----------------------------------------------------------

    async def read_engines(self) -> list[Engine]:
        return await self.db.run(jobs.read_engines)

    async def results_to_expire(
        self, engine_id: str, environment_id: str, finished_before: datetime, limit: int
    ) -> list[Job]:
        return await self.db.run(lambda s: jobs.results_to_expire(s, engine_id, environment_id, finished_before, limit))

    async def mark_results_expired(self, job_id: str, at: datetime) -> bool:
        return await self.db.run(lambda s: jobs.mark_results_expired(s, job_id, at))

    # -- ports.ResultsStore -----------------------------------------------------------

    async def release_results(self, job_id: str, locations: Sequence[str]) -> list[str]:
        return await self.db.run(lambda s: jobs.release_results(s, job_id, locations))
