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
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import json_format
from sqlalchemy.orm import Session

from c2d.common.v1 import common_pb2
from c2d.provider.v1 import provider_pb2, provider_pb2_grpc
from plumbing import errors, fetching, logs, storage, tracing, untrusted
from plumbing.database import Database
from plumbing.rpc_types import StreamContext, UnaryContext
from plumbing.statuses import is_terminal
from services.provider.api.authentication import authenticate
from services.provider.api.downloads import result_entry, stream_result_file
from services.provider.clients.algorithm_files import AlgorithmFiles, FetchError
from services.provider.clients.operator import OperatorClient
from services.provider.domain import compute_plan, ddos, file_locations, identity, results_grants, sealing
from services.provider.domain import errors as codes
from services.provider.domain.compute_plan import Plan
from services.provider.domain.errors import Refusal
from services.provider.domain.signed_requests import RequestVerifier
from services.provider.persistence import store
from services.provider.persistence.catalog import AssetCatalog
from services.provider.persistence.models import Order

FINISHED_JOB_TTL_S = 2.0
FINISHED_JOBS_CACHED = 4096

log = logging.getLogger("c2d.provider")


def _not_found(job_id: str) -> errors.NotFound:
    # Someone else's job gets the same answer as a job that does not exist: no probing.
    return errors.NotFound(f"job {job_id} does not exist or is not yours", "job_not_found")


def _check_may_read(caller: str, job: common_pb2.Job, method: str, owner_only: bool = False) -> None:
    """The job's owner and the viewers it named may read it; only the owner may change it."""
    if caller != job.owner and caller not in job.viewers:
        raise _not_found(job.job_id)
    if owner_only and caller != job.owner:
        raise Refusal(codes.NOT_OWNER, f"only the job's owner may {method} it; viewers may only read")


def _choice(order: provider_pb2.AssetOrder) -> compute_plan.AssetChoice:
    return compute_plan.AssetChoice(did=order.did, service_id=order.service_id, order_id=order.order_id)


def compute_request(spec: provider_pb2.ComputeSpec) -> compute_plan.ComputeRequest:
    """The spec as the compute plan reads it."""
    kind = spec.WhichOneof("algorithm")
    raw = None
    if kind == "raw_algorithm":
        c = spec.raw_algorithm.container
        container = ddos.AlgorithmContainer(entrypoint=c.entrypoint, image=c.image, tag=c.tag, checksum=c.checksum)
        raw = compute_plan.RawAlgorithm(code=spec.raw_algorithm.code, container=container)
    return compute_plan.ComputeRequest(
        dataset=_choice(spec.dataset) if spec.HasField("dataset") else None,
        additional_datasets=tuple(_choice(order) for order in spec.additional_datasets),
        algorithm_asset=_choice(spec.algorithm_asset) if kind == "algorithm_asset" else None,
        raw_algorithm=raw,
        environment_id=spec.environment_id,
        max_duration_seconds=spec.max_duration_seconds,
        allow_network=spec.allow_network,
        algorithm_parameters_json=spec.algorithm_parameters_json,
    )


def workflow_of(plan: Plan, spec: provider_pb2.ComputeSpec) -> common_pb2.Workflow:
    """What the job runs, without its file locations (see ComputeServicer._stage_assets)."""
    c = plan.container
    return common_pb2.Workflow(
        raw_algorithm=plan.raw_algorithm_code,
        container=common_pb2.AlgorithmContainer(entrypoint=c.entrypoint, image=c.image, tag=c.tag, checksum=c.checksum),
        allow_network=plan.allow_network,
        algorithm_files_checksum=plan.algorithm_files_checksum,
        algo_custom_data_json=plan.algo_custom_data_json,
        max_duration_seconds=spec.max_duration_seconds,
        publish_results_as_asset=spec.publish_results_as_asset,
        pack_outputs=spec.pack_outputs,
        owner=plan.consumer,
    )


class ComputeServicer(provider_pb2_grpc.ProviderServiceServicer):
    def __init__(
        self,
        db: Database,
        keys: sealing.ProviderKeys,
        fee_address: str,
        verifier: RequestVerifier,
        assets: AssetCatalog,
        operator: OperatorClient,
        results: storage.ObjectStore,
        results_storage: file_locations.ResultsStorage,
        algorithm_files: AlgorithmFiles,
        links: storage.ResultLinks,
    ) -> None:
        self._db = db
        self._algorithm_files = algorithm_files
        self._keys = keys
        self._fee_address = fee_address
        self._verifier = verifier
        self._assets = assets
        self._operator = operator
        self._results = results
        self._results_storage = results_storage
        self._links = links
        self._finished_jobs: collections.OrderedDict[str, tuple[float, provider_pb2.GetJobDetailsResponse]] = (
            collections.OrderedDict()
        )
        # Where pods on this host reach the provider (results as an asset);
        # set by server.py once the port is bound.
        self.reachable_address = ""

    # -- identity and environments ------------------------------------------------

    async def GetNonce(
        self,
        request: provider_pb2.GetNonceRequest,
        context: UnaryContext[provider_pb2.GetNonceRequest, provider_pb2.GetNonceResponse],
    ) -> provider_pb2.GetNonceResponse:
        address = identity.normalize_address(request.address)
        return provider_pb2.GetNonceResponse(nonce=await self._db.run(lambda s: store.read_nonce(s, address)))

    async def GetProviderInfo(
        self,
        request: provider_pb2.GetProviderInfoRequest,
        context: UnaryContext[provider_pb2.GetProviderInfoRequest, provider_pb2.GetProviderInfoResponse],
    ) -> provider_pb2.GetProviderInfoResponse:
        return provider_pb2.GetProviderInfoResponse(
            fee_address=self._fee_address,
            encryption_public_key=self._keys.public_key_hex,
            signing_public_key=self._keys.verify_key_hex,
        )

    async def ListComputeEnvironments(
        self,
        request: provider_pb2.ListComputeEnvironmentsRequest,
        context: UnaryContext[
            provider_pb2.ListComputeEnvironmentsRequest, provider_pb2.ListComputeEnvironmentsResponse
        ],
    ) -> provider_pb2.ListComputeEnvironmentsResponse:
        return provider_pb2.ListComputeEnvironmentsResponse(environments=await self._operator.list_environments())

    # -- starting ------------------------------------------------------------------

    async def _plan(self, method: str, request: Any) -> Plan:
        consumer = await authenticate(self._verifier, method, request)
        return await compute_plan.plan_compute(compute_request(request.spec), consumer, self._assets, self._operator)

    def _files_of(self, planned: compute_plan.PlannedAsset) -> list[common_pb2.FileLocation]:
        """The asset's file locations, decrypted (publisher-side only)."""
        service = planned.asset.ddo.service(planned.choice.service_id)
        assert service is not None
        files = []
        for index, entry in enumerate(sealing.open_files(self._keys, service.files)):
            # checked at publishing too; again here for rows stored before that check, or around it
            file_locations.check_publisher_file(entry, self._results_storage, f"{planned.did} files[{index}]")
            files.append(json_format.ParseDict(entry, common_pb2.FileLocation(), ignore_unknown_fields=True))
        return files

    def _stage_assets(self, plan: Plan, workflow: common_pb2.Workflow) -> None:
        """Decrypts the file locations into the workflow (publisher-side only)."""
        for planned in plan.assets:
            asset = common_pb2.WorkflowAsset(did=planned.did, ddo_json=planned.asset.ddo_json)
            asset.files.extend(self._files_of(planned))
            if planned.asset.ddo.is_algorithm:
                workflow.algorithm.CopyFrom(asset)
            else:
                workflow.datasets.append(asset)

    async def _releases_of(self, order_ids: list[str]) -> dict[str, int]:
        """How often each order was given back, after giving back those of a
        job that released them (it ended before its algorithm, through no
        fault of the consumer): the request key follows, so a retry with such
        orders starts a new job and one with spent orders returns their job."""
        orders = await self._db.run(lambda s: store.read_orders(s, order_ids))
        for job_id in {order.used_by_job_id for order in orders if order.used_by_job_id}:
            try:
                job = await self._operator.get_job(job_id)
            except errors.NotFound:
                continue  # deleted: its orders stay spent
            if job.orders_released:
                log.info("job %s released its orders; they start a new job", job_id)

                def release(session: Session, job_id: str = job_id) -> list[Order]:
                    store.release_spent_orders(session, job_id)
                    return store.read_orders(session, order_ids)

                orders = await self._db.run(release)
        return {order.order_id: order.releases for order in orders}

    async def _check_algorithm_files(self, plan: Plan) -> None:
        """Fetches a trusted algorithm's files and refuses them if they are not
        what the datasets pin, before the consumer pays (as Ocean's provider
        does); pod_config checks them again when it stages the job."""
        algorithm = next((p for p in plan.assets if p.asset.ddo.is_algorithm), None)
        if algorithm is None or not plan.algorithm_files_checksum:
            return
        files = self._files_of(algorithm)
        service = algorithm.asset.ddo.service(algorithm.choice.service_id)
        assert service is not None
        try:
            actual = await self._algorithm_files.files_checksum(
                f"{algorithm.did}\n{service.files}", [fetching.source_of(f) for f in files]
            )
        except FetchError as error:  # its message names no location (plumbing/fetching.py)
            raise Refusal(
                codes.ALGORITHM_FILES_UNREACHABLE,
                f"the files of algorithm {algorithm.did} could not be fetched to check their filesChecksum"
                f" ({error.code}: {error.message}); try again later",
            ) from None
        if actual is not None and actual != plan.algorithm_files_checksum:
            raise Refusal(
                codes.ALGORITHM_CHECKSUM_MISMATCH,
                f"the files of algorithm {algorithm.did} are not the ones the dataset trusts: their filesChecksum"
                f" is {actual}, the dataset pins {plan.algorithm_files_checksum}; the algorithm changed since it"
                " was trusted, so no job of it can run here",
                kind=codes.FAILED_PRECONDITION,
            )

    async def InitializeCompute(
        self,
        request: provider_pb2.InitializeComputeRequest,
        context: UnaryContext[provider_pb2.InitializeComputeRequest, provider_pb2.InitializeComputeResponse],
    ) -> provider_pb2.InitializeComputeResponse:
        plan = await self._plan("InitializeCompute", request)
        await self._check_algorithm_files(plan)

        def requirements(session: Session) -> list[provider_pb2.OrderRequirement]:
            result = []
            for planned in plan.assets:
                order = planned.choice
                token = store.datatoken_for(session, planned.did, order.service_id)
                valid = store.valid_order_for(session, plan.consumer, planned.did, order.service_id)
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

    async def StartCompute(
        self,
        request: provider_pb2.StartComputeRequest,
        context: UnaryContext[provider_pb2.StartComputeRequest, provider_pb2.StartComputeResponse],
    ) -> provider_pb2.StartComputeResponse:
        plan = await self._plan("StartCompute", request)
        consumer = plan.consumer
        order_ids = compute_plan.claimed_orders(plan)
        request_key = compute_plan.request_key(order_ids, await self._releases_of(order_ids))
        workflow = workflow_of(plan, request.spec)
        workflow.trace_parent = tracing.traceparent()  # the job's stages and pods join this request's trace
        if workflow.publish_results_as_asset:
            # pod_publish registers the results asset with this single-job grant
            workflow.results_asset_grant = results_grants.mint_grant(self._keys, consumer, request_key)
            workflow.provider_address = self.reachable_address

        def claim(session: Session) -> None:
            for planned in plan.assets:
                order = planned.choice
                found = store.read_order(session, order.order_id)
                store.check_order(found, order.order_id, consumer, planned.did, order.service_id, request_key)
            store.claim_orders(session, order_ids, request_key)

        await self._db.run(claim)
        try:
            self._stage_assets(plan, workflow)
            job = await self._operator.create_job(
                request_id=request_key,
                owner=consumer,
                environment_id=request.spec.environment_id,
                workflow=workflow,
                viewers=[identity.normalize_address(v) for v in request.spec.viewers],
            )
        except Exception:
            await self._db.run(lambda s: store.release_orders(s, order_ids, request_key))
            raise
        await self._db.run(lambda s: store.record_job(s, order_ids, job.job_id))
        logs.bind(job_id=job.job_id)
        log.info("job %s started for %s", job.job_id, consumer)
        return provider_pb2.StartComputeResponse(job_id=job.job_id, job=job)

    # -- the job's owner only -------------------------------------------------------

    async def _readable_job(self, caller: str, method: str, job_id: str, owner_only: bool = False) -> common_pb2.Job:
        try:
            job = await self._operator.get_job(job_id)
        except errors.NotFound:
            raise _not_found(job_id) from None
        _check_may_read(caller, job, method, owner_only)
        return job

    async def _owned_job(self, method: str, request: Any, owner_only: bool = False) -> common_pb2.Job:
        caller = await authenticate(self._verifier, method, request)
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
        return provider_pb2.SignedResults(
            statement_json=text, signature=signature, public_key=self._keys.verify_key_hex
        )

    async def GetJobDetails(
        self,
        request: provider_pb2.GetJobDetailsRequest,
        context: UnaryContext[provider_pb2.GetJobDetailsRequest, provider_pb2.GetJobDetailsResponse],
    ) -> provider_pb2.GetJobDetailsResponse:
        """A finished job's answer comes from a short-lived cache, statement
        signed once: it changes only when the job is deleted (through us:
        evicted) or its results expire (seen within FINISHED_JOB_TTL_S), and
        clients poll finished jobs a lot. The caller is checked on every read."""
        caller = await authenticate(self._verifier, "GetJobDetails", request)
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

    async def WatchJob(
        self,
        request: provider_pb2.WatchJobRequest,
        context: StreamContext[provider_pb2.WatchJobRequest, provider_pb2.WatchJobResponse],
    ) -> AsyncIterator[provider_pb2.WatchJobResponse]:
        job = await self._owned_job("WatchJob", request)
        after = untrusted.int64(request.after_sequence, "after_sequence")
        async with contextlib.aclosing(self._operator.watch_job(job.job_id, after)) as updates:
            async for update in updates:
                yield provider_pb2.WatchJobResponse(job=update)

    async def ListJobs(
        self,
        request: provider_pb2.ListJobsRequest,
        context: UnaryContext[provider_pb2.ListJobsRequest, provider_pb2.ListJobsResponse],
    ) -> provider_pb2.ListJobsResponse:
        caller = await authenticate(self._verifier, "ListJobs", request)
        response = await self._operator.list_jobs(caller, request.statuses, request.page_size, request.page_token)
        return provider_pb2.ListJobsResponse(jobs=response.jobs, next_page_token=response.next_page_token)

    async def StopCompute(
        self,
        request: provider_pb2.StopComputeRequest,
        context: UnaryContext[provider_pb2.StopComputeRequest, provider_pb2.StopComputeResponse],
    ) -> provider_pb2.StopComputeResponse:
        job = await self._owned_job("StopCompute", request, owner_only=True)
        return provider_pb2.StopComputeResponse(job=await self._operator.stop_job(job.job_id))

    async def DeleteCompute(
        self,
        request: provider_pb2.DeleteComputeRequest,
        context: UnaryContext[provider_pb2.DeleteComputeRequest, provider_pb2.DeleteComputeResponse],
    ) -> provider_pb2.DeleteComputeResponse:
        job = await self._owned_job("DeleteCompute", request, owner_only=True)
        await self._operator.delete_job(job.job_id)
        self._finished_jobs.pop(job.job_id, None)  # after the delete: a read in between may have cached it
        return provider_pb2.DeleteComputeResponse()

    async def GetComputeResult(
        self,
        request: provider_pb2.GetComputeResultRequest,
        context: StreamContext[provider_pb2.GetComputeResultRequest, provider_pb2.GetComputeResultResponse],
    ) -> AsyncIterator[provider_pb2.GetComputeResultResponse]:
        job = await self._owned_job("GetComputeResult", request)
        entry = result_entry(job, request.index, self._results_storage)
        download = stream_result_file(
            self._results, entry.location, entry, request.offset, provider_pb2.GetComputeResultResponse
        )
        async with contextlib.aclosing(download) as responses:  # closed at once if the consumer goes away
            async for response in responses:
                yield response

    async def GetComputeResultLink(
        self,
        request: provider_pb2.GetComputeResultLinkRequest,
        context: UnaryContext[provider_pb2.GetComputeResultLinkRequest, provider_pb2.GetComputeResultLinkResponse],
    ) -> provider_pb2.GetComputeResultLinkResponse:
        job = await self._owned_job("GetComputeResultLink", request)
        entry = result_entry(job, request.index, self._results_storage)
        try:
            link = self._links.link(entry.location)
        except storage.StorageError as exc:
            raise errors.FailedPrecondition(
                f"result file {entry.index} of job {job.job_id} has no link ({exc.message}): stream it with "
                "GetComputeResult",
                "result_link_unavailable",
            ) from None
        response = provider_pb2.GetComputeResultLinkResponse(
            file=entry,
            signed_results=self._signed_results(job),
            url=link.url,
            cid=link.cid,
            no_link_reason=link.no_link_reason,
        )
        if link.expires_at is not None:
            response.expires_at.FromDatetime(link.expires_at)
        return response

    async def StreamJobLogs(
        self,
        request: provider_pb2.StreamJobLogsRequest,
        context: StreamContext[provider_pb2.StreamJobLogsRequest, provider_pb2.StreamJobLogsResponse],
    ) -> AsyncIterator[provider_pb2.StreamJobLogsResponse]:
        job = await self._owned_job("StreamJobLogs", request)
        async with contextlib.aclosing(
            self._operator.stream_job_logs(job.job_id, request.follow, untrusted.int64(request.offset, "offset"))
        ) as chunks:
            async for chunk in chunks:
                yield provider_pb2.StreamJobLogsResponse(data=chunk.data, offset=chunk.offset)
