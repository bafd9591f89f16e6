"""ProviderService: the compute API.

StartCompute runs every check (signature, assets, policy, environment,
orders) before anything starts; the orders are claimed atomically under a
request key derived from them, and that key is the operator-service's
idempotency key, so a retried request returns the same job and two requests
can never share an order.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format

from c2d.common.v1 import common_pb2
from c2d.operator.v1 import operator_pb2, operator_pb2_grpc
from c2d.provider.v1 import provider_pb2, provider_pb2_grpc
from plumbing import auth, errors, storage
from plumbing.database import Database
from plumbing.grpc_errors import downstream_error
from plumbing.statuses import is_terminal
from services.provider.api import results_assets, results_download
from services.provider.api.assets import resolve
from services.provider.api.signatures import authenticate
from services.provider.domain import ddos, identity, policy, sealing
from services.provider.domain import errors as codes
from services.provider.domain.errors import Refusal
from services.provider.persistence import store

FINISHED_JOB_TTL_S = 2.0
FINISHED_JOBS_CACHED = 4096


@dataclass
class Plan:
    """A compute request that passed every check but the orders."""

    consumer: str
    assets: list[tuple[provider_pb2.AssetOrder, ddos.Ddo, str]] = field(default_factory=list)  # with ddo json
    workflow: common_pb2.Workflow = field(default_factory=common_pb2.Workflow)


def _not_found(job_id: str) -> errors.NotFound:
    # Someone else's job gets the same answer as a job that does not exist: no probing.
    return errors.NotFound(f"job {job_id} does not exist or is not yours", "job_not_found")


def _check_may_read(caller: str, job: common_pb2.Job, method: str, owner_only: bool = False) -> None:
    """The job's owner and the viewers it named may read it; only the owner may change it."""
    if caller != job.owner and caller not in job.viewers:
        raise _not_found(job.job_id)
    if owner_only and caller != job.owner:
        raise Refusal(codes.NOT_OWNER, f"only the job's owner may {method} it; viewers may only read")


class ComputeServicer(provider_pb2_grpc.ProviderServiceServicer):
    def __init__(
        self, db: Database, keys: sealing.ProviderKeys, fee_address: str, operator_address: str, token: str
    ) -> None:
        self._db = db
        self._keys = keys
        self._fee_address = fee_address
        self._channel = auth.internal_channel(operator_address)
        self._operator = operator_pb2_grpc.OperatorServiceStub(self._channel)
        self._metadata = auth.bearer(token)
        self._store = storage.open_store(storage.configured())
        self._verify_key_hex = keys.verify_key_hex
        self._finished_jobs: collections.OrderedDict[str, tuple[float, provider_pb2.GetJobDetailsResponse]] = (
            collections.OrderedDict()
        )
        # Where pods on this host reach the provider (results as an asset);
        # set by server.py once the port is bound.
        self.reachable_address = ""

    async def close(self) -> None:
        await self._channel.close()

    async def job(self, job_id: str) -> common_pb2.Job:
        """The operator-service's record of a job (no ownership check)."""
        return (await self._call(self._operator.GetJob, operator_pb2.GetJobRequest(job_id=job_id))).job

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, metadata=self._metadata, timeout=30)
        except grpc.aio.AioRpcError as exc:
            raise downstream_error(exc, "the operator-service") from None

    # -- identity and environments ------------------------------------------------

    async def GetNonce(self, request, context):  # type: ignore[override]
        address = identity.normalize_address(request.address)
        return provider_pb2.GetNonceResponse(nonce=await self._db.run(lambda s: store.read_nonce(s, address)))

    async def GetProviderInfo(self, request, context):  # type: ignore[override]
        return provider_pb2.GetProviderInfoResponse(
            fee_address=self._fee_address,
            encryption_public_key=self._keys.public_key_hex,
            signing_public_key=self._keys.verify_key_hex,
        )

    async def ListComputeEnvironments(self, request, context):  # type: ignore[override]
        response = await self._call(self._operator.ListEnvironments, operator_pb2.ListEnvironmentsRequest())
        return provider_pb2.ListComputeEnvironmentsResponse(environments=response.environments)

    # -- starting ------------------------------------------------------------------

    async def _plan(self, spec: provider_pb2.ComputeSpec, consumer: str) -> Plan:
        if not spec.HasField("dataset"):
            raise errors.InvalidArgument("spec.dataset is required", "dataset_missing")
        algorithm_kind = spec.WhichOneof("algorithm")
        if algorithm_kind is None:
            raise errors.InvalidArgument(
                "spec needs an algorithm: algorithm_asset or raw_algorithm", "algorithm_missing"
            )
        if not spec.environment_id:
            raise errors.InvalidArgument(
                "spec.environment_id is required (ListComputeEnvironments)", "environment_missing"
            )
        plan = Plan(consumer=consumer)
        services = []
        for order in [spec.dataset, *spec.additional_datasets]:
            row, ddo = await resolve(self._db, order.did)
            service = policy.check_dataset(ddo, order.service_id)
            policy.check_credentials(ddo, consumer)
            plan.assets.append((order, ddo, row.ddo_json))
            services.append(service)
        workflow = plan.workflow
        raw = algorithm_kind == "raw_algorithm"
        algorithm_ddo = None
        if raw:
            code = spec.raw_algorithm.code
            container = spec.raw_algorithm.container
            if not code.strip():
                raise errors.InvalidArgument("raw_algorithm.code is empty", "algorithm_empty")
            if "$ALGO" not in container.entrypoint or not container.image:
                raise errors.InvalidArgument(
                    "raw_algorithm.container needs an image and an entrypoint containing $ALGO", "container_invalid"
                )
            workflow.raw_algorithm = code
            workflow.container.CopyFrom(container)
        else:
            order = spec.algorithm_asset
            row, algorithm_ddo = await resolve(self._db, order.did)
            policy.check_credentials(algorithm_ddo, consumer)
            if algorithm_ddo.is_algorithm and algorithm_ddo.service(order.service_id) is None:
                raise Refusal(codes.SERVICE_NOT_FOUND, f"{order.did} has no service {order.service_id!r}")
            plan.assets.append((order, algorithm_ddo, row.ddo_json))
        for service in services:
            policy.check_algorithm_allowed(service, algorithm_ddo, None, raw)
        workflow.allow_network = policy.check_network(services, spec.allow_network)
        parameters_spec: tuple[Any, ...] = ()
        if algorithm_ddo is not None:
            algo = algorithm_ddo.metadata.algorithm
            assert algo is not None  # check_algorithm_allowed refused non-algorithms
            c = algo.container
            workflow.container.CopyFrom(
                common_pb2.AlgorithmContainer(entrypoint=c.entrypoint, image=c.image, tag=c.tag, checksum=c.checksum)
            )
            parameters_spec = algo.consumer_parameters
            trusted = [policy.find_trusted_algorithm(s, algorithm_ddo.id or "") for s in services]
            pinned = {t.files_checksum for t in trusted if t is not None and t.files_checksum}
            if len(pinned) > 1:
                raise Refusal(
                    codes.ALGORITHM_CHECKSUM_MISMATCH, "the datasets pin different files checksums for this algorithm"
                )
            workflow.algorithm_files_checksum = pinned.pop() if pinned else ""
        try:
            given = json.loads(spec.algorithm_parameters_json or "{}")
        except ValueError:
            raise Refusal(codes.CONSUMER_PARAMETERS_INVALID, "algorithm_parameters_json is not valid JSON") from None
        if not isinstance(given, dict):
            raise Refusal(codes.CONSUMER_PARAMETERS_INVALID, "algorithm_parameters_json must be a JSON object")
        workflow.algo_custom_data_json = json.dumps(policy.validate_consumer_parameters(parameters_spec, given))
        await self._check_environment(spec)
        workflow.max_duration_seconds = spec.max_duration_seconds
        workflow.publish_results_as_asset = spec.publish_results_as_asset
        workflow.pack_outputs = spec.pack_outputs
        workflow.owner = consumer
        return plan

    async def _check_environment(self, spec: provider_pb2.ComputeSpec) -> None:
        response = await self._call(self._operator.ListEnvironments, operator_pb2.ListEnvironmentsRequest())
        env = next((e for e in response.environments if e.id == spec.environment_id), None)
        if env is None:
            known = ", ".join(e.id for e in response.environments) or "none"
            raise Refusal(
                codes.ENVIRONMENT_UNKNOWN, f"environment {spec.environment_id!r} does not exist (known: {known})"
            )
        if not env.available:
            raise Refusal(
                codes.ENVIRONMENT_UNAVAILABLE, f"environment {env.id} is unavailable: its engine is not responding"
            )
        if spec.max_duration_seconds > env.max_job_duration_seconds:
            raise errors.InvalidArgument(
                f"max_duration_seconds {spec.max_duration_seconds} exceeds environment {env.id}'s maximum of "
                f"{env.max_job_duration_seconds}",
                "duration_too_long",
            )

    def _stage_assets(self, plan: Plan) -> None:
        """Decrypts the file locations into the workflow (publisher-side only)."""
        for order, ddo, ddo_json in plan.assets:
            service = ddo.service(order.service_id)
            assert service is not None
            asset = common_pb2.WorkflowAsset(did=ddo.id or order.did, ddo_json=ddo_json)
            for entry in sealing.open_files(self._keys, service.files):
                asset.files.append(json_format.ParseDict(entry, common_pb2.FileLocation(), ignore_unknown_fields=True))
            if ddo.is_algorithm:
                plan.workflow.algorithm.CopyFrom(asset)
            else:
                plan.workflow.datasets.append(asset)

    async def InitializeCompute(self, request, context):  # type: ignore[override]
        consumer = await authenticate(self._db, "InitializeCompute", request)
        plan = await self._plan(request.spec, consumer)

        def requirements(session) -> list[provider_pb2.OrderRequirement]:  # type: ignore[no-untyped-def]
            result = []
            for order, ddo, _ in plan.assets:
                token = store.datatoken_for(session, ddo.id or order.did, order.service_id)
                valid = store.valid_order_for(session, consumer, ddo.id or order.did, order.service_id)
                result.append(
                    provider_pb2.OrderRequirement(
                        did=order.did,
                        service_id=order.service_id,
                        datatoken_address=token.address if token else "",
                        amount=1,
                        valid_order_id=valid.order_id if valid else "",
                    )
                )
            return result

        return provider_pb2.InitializeComputeResponse(orders=await self._db.run(requirements))

    async def StartCompute(self, request, context):  # type: ignore[override]
        consumer = await authenticate(self._db, "StartCompute", request)
        plan = await self._plan(request.spec, consumer)
        order_ids = [order.order_id for order, _, _ in plan.assets]
        if any(not order_id for order_id in order_ids):
            missing = next(order.did for order, _, _ in plan.assets if not order.order_id)
            raise Refusal(codes.ORDER_MISSING, f"no order_id for {missing}; order it first (StartOrder)")
        if len(set(order_ids)) != len(order_ids):
            raise Refusal(codes.ORDER_INVALID, "each asset needs its own order")
        request_key = hashlib.sha256(":".join(sorted(order_ids)).encode()).hexdigest()
        if plan.workflow.publish_results_as_asset:
            # pod_publish registers the results asset with this single-job grant
            plan.workflow.results_asset_grant = results_assets.mint_grant(self._keys, consumer, request_key)
            plan.workflow.provider_address = self.reachable_address

        def claim(session) -> None:  # type: ignore[no-untyped-def]
            for order, ddo, _ in plan.assets:
                found = store.read_order(session, order.order_id)
                store.check_order(found, order.order_id, consumer, ddo.id or order.did, order.service_id, request_key)
            store.claim_orders(session, order_ids, request_key)

        await self._db.run(claim)
        try:
            self._stage_assets(plan)
            response = await self._call(
                self._operator.CreateJob,
                operator_pb2.CreateJobRequest(
                    request_id=request_key,
                    owner=consumer,
                    environment_id=request.spec.environment_id,
                    workflow=plan.workflow,
                    viewers=[identity.normalize_address(v) for v in request.spec.viewers],
                ),
            )
        except Exception:
            await self._db.run(lambda s: store.release_orders(s, order_ids, request_key))
            raise
        job = response.job
        await self._db.run(lambda s: store.record_job(s, order_ids, job.job_id))
        return provider_pb2.StartComputeResponse(job_id=job.job_id, job=job)

    # -- the job's owner only -------------------------------------------------------

    async def _readable_job(self, caller: str, method: str, job_id: str, owner_only: bool = False) -> common_pb2.Job:
        try:
            job = await self.job(job_id)
        except errors.NotFound:
            raise _not_found(job_id) from None
        _check_may_read(caller, job, method, owner_only)
        return job

    async def _owned_job(self, method: str, request: Any, owner_only: bool = False) -> common_pb2.Job:
        caller = await authenticate(self._db, method, request)
        return await self._readable_job(caller, method, request.job_id, owner_only)

    def _signed_results(self, job: common_pb2.Job) -> provider_pb2.SignedResults | None:
        if not job.HasField("results"):
            return None
        statement = {
            "job_id": job.job_id,
            "dataset_dids": list(job.dataset_dids),
            "algorithm_did": job.algorithm_did,
            "results": json_format.MessageToDict(job.results, preserving_proto_field_name=True),
        }
        text = json.dumps(statement, sort_keys=True, separators=(",", ":"))
        signature = sealing.sign_bytes(self._keys, text.encode())
        return provider_pb2.SignedResults(statement_json=text, signature=signature, public_key=self._verify_key_hex)

    async def GetJobDetails(self, request, context):  # type: ignore[override]
        """A finished job's answer comes from a short-lived cache, statement
        signed once: it changes only when the job is deleted (through us:
        evicted) or its results expire (seen within FINISHED_JOB_TTL_S), and
        clients poll finished jobs a lot. The caller is checked on every read."""
        caller = await authenticate(self._db, "GetJobDetails", request)
        cached = self._finished_jobs.get(request.job_id)
        if cached is not None and time.monotonic() - cached[0] < FINISHED_JOB_TTL_S:
            _check_may_read(caller, cached[1].job, "GetJobDetails")
            return cached[1]
        job = await self._readable_job(caller, "GetJobDetails", request.job_id)
        details = provider_pb2.GetJobDetailsResponse(job=job, signed_results=self._signed_results(job))
        if is_terminal(job.status):
            self._finished_jobs[job.job_id] = (time.monotonic(), details)
            self._finished_jobs.move_to_end(job.job_id)
            if len(self._finished_jobs) > FINISHED_JOBS_CACHED:
                self._finished_jobs.popitem(last=False)
        return details

    async def WatchJob(self, request, context) -> AsyncIterator[provider_pb2.WatchJobResponse]:  # type: ignore[override]
        job = await self._owned_job("WatchJob", request)
        call = self._operator.WatchJobs(
            operator_pb2.WatchJobsRequest(job_ids=[job.job_id], after_sequence=request.after_sequence),
            metadata=self._metadata,
        )
        try:
            async for update in call:
                yield provider_pb2.WatchJobResponse(job=update.job)
        except grpc.aio.AioRpcError as exc:
            raise downstream_error(exc, "the operator-service") from None

    async def ListJobs(self, request, context):  # type: ignore[override]
        caller = await authenticate(self._db, "ListJobs", request)
        response = await self._call(
            self._operator.ListJobs,
            operator_pb2.ListJobsRequest(
                owner=caller, statuses=request.statuses, page_size=request.page_size, page_token=request.page_token
            ),
        )
        return provider_pb2.ListJobsResponse(jobs=response.jobs, next_page_token=response.next_page_token)

    async def StopCompute(self, request, context):  # type: ignore[override]
        job = await self._owned_job("StopCompute", request, owner_only=True)
        response = await self._call(self._operator.StopJob, operator_pb2.StopJobRequest(job_id=job.job_id))
        return provider_pb2.StopComputeResponse(job=response.job)

    async def DeleteCompute(self, request, context):  # type: ignore[override]
        job = await self._owned_job("DeleteCompute", request, owner_only=True)
        await self._call(self._operator.DeleteJob, operator_pb2.DeleteJobRequest(job_id=job.job_id))
        self._finished_jobs.pop(job.job_id, None)  # after the delete: a read in between may have cached it
        return provider_pb2.DeleteComputeResponse()

    async def GetComputeResult(self, request, context):  # type: ignore[override]
        job = await self._owned_job("GetComputeResult", request)
        files = {f.index: f for f in job.results.files}
        if not job.HasField("results") or not is_terminal(job.status):
            raise errors.FailedPrecondition(f"job {job.job_id} has no results yet (status {job.status})", "no_results")
        if job.results.expired:
            raise errors.FailedPrecondition(
                f"the results of job {job.job_id} expired and were removed", "results_expired"
            )
        entry = files.get(request.index)
        if entry is None:
            raise errors.NotFound(
                f"job {job.job_id} has no result file {request.index} (it has {len(files)})", "result_not_found"
            )
        if request.offset > entry.size:
            raise errors.InvalidArgument(
                f"offset {request.offset} is beyond the file's {entry.size} bytes", "offset_invalid"
            )
        first = True
        async with contextlib.aclosing(
            results_download.stream_chunks(self._store, entry.location, request.offset)
        ) as chunks:
            async for data, offset in chunks:  # closed at once if the consumer goes away
                yield provider_pb2.GetComputeResultResponse(file=entry if first else None, data=data, offset=offset)
                first = False
        if first:  # an empty file (or offset at its end) still answers with its entry
            yield provider_pb2.GetComputeResultResponse(file=entry, offset=request.offset)

    async def StreamJobLogs(self, request, context):  # type: ignore[override]
        job = await self._owned_job("StreamJobLogs", request)
        call = self._operator.StreamJobLogs(
            operator_pb2.StreamJobLogsRequest(job_id=job.job_id, follow=request.follow, offset=request.offset),
            metadata=self._metadata,
        )
        try:
            async for chunk in call:
                yield provider_pb2.StreamJobLogsResponse(data=chunk.data, offset=chunk.offset)
        except grpc.aio.AioRpcError as exc:
            raise downstream_error(exc, "the operator-service") from None
