"""The fuzz harness: a running stack, every RPC it serves, and one checked call.

The stack (tests/provider/market.py's: provider, operator-service, engine on
PostgreSQL, the engine's no-op backend, a file server) runs on its own event
loop in a thread, so hypothesis drives plain blocking gRPC calls over real
sockets. The RPCs come from the generated descriptors (every `*_pb2` module
under `c2d`), and each server is asked over grpc.health which services it
serves, so a new RPC or service is fuzzed with no change here.

A call fails the fuzzer when it is answered INTERNAL, UNKNOWN, DATA_LOSS or
UNAVAILABLE (nothing here is down), when a unary call hangs past its
deadline, when a server stops answering its health check after it, or when
the status message shows a Python exception or stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import pkgutil
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, example, given, reject, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

import c2d
from c2d.common.v1 import common_pb2
from c2d.engine.v1 import engine_pb2, job_agent_pb2
from c2d.operator.v1 import operator_pb2
from c2d.provider.v1 import asset_pb2, provider_pb2
from c2d_sdk import Signer, assets
from c2d_sdk.signing import signed_fields
from plumbing import auth
from services.operator_engine import server as engine_server
from services.operator_engine.backends.noop import NoopBackend
from services.operator_engine.domain.jobs import JobSpec, StageExit
from services.operator_engine.domain.stages import Stage
from testkit import market as market_module
from testkit.fuzz.values import Known, invalid_utf8_patch, messages
from testkit.stacks import fresh_postgres_database

ROOT = Path(__file__).resolve().parents[2]
DATABASE = DirectoryBasedExampleDatabase(str(ROOT / ".hypothesis" / "examples"))
_COMMON = {
    "deadline": None,  # each call has its own gRPC deadline
    "database": DATABASE,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
}
# ci: the bounded run of every CI build; long: a night on a workstation.
settings.register_profile("ci", max_examples=int(os.environ.get("C2D_FUZZ_EXAMPLES", "12")), **_COMMON)
settings.register_profile("long", max_examples=int(os.environ.get("C2D_FUZZ_EXAMPLES", "1000")), **_COMMON)


def profile() -> settings:
    return settings.get_profile(os.environ.get("C2D_FUZZ_PROFILE", "ci"))


UNARY_DEADLINE_S = 15.0  # a hang, on this loaded machine, not a slow answer
STREAM_BUDGET_S = 1.0  # follow streams never end: read this long, then leave
HEALTH_DEADLINE_S = 10.0
MAX_REQUEST_BYTES = 6 << 20  # over the servers' 4 MiB limit, under what is worth sending
# Statuses that are never the answer to a client's mistake.
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS, grpc.StatusCode.UNAVAILABLE}
# A Python exception, traceback or object repr in a message meant for a client.
LEAK = re.compile(
    r"Traceback|File \"|\b[A-Z]\w*(Error|Exception)\b|\w+Error:|object has no attribute|"
    r"object is not|unexpected keyword|positional argument|<\w[\w.]* object at 0x|psycopg2|sqlalchemy|"
    r"\(Background on this error"
)
JOB_AGENT = "c2d.engine.v1.JobAgentService"
HELD_PREFIX = "fuzz-held-"


# -- the RPCs --------------------------------------------------------------------------


@dataclass(frozen=True)
class Rpc:
    service: str
    method: MethodDescriptor

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.method.name}"

    @property
    def name(self) -> str:
        return f"{self.service.rsplit('.', 1)[-1]}/{self.method.name}"

    @property
    def streaming(self) -> bool:
        return bool(self.method.server_streaming)

    @property
    def signed(self) -> bool:
        fd = self.method.input_type.fields_by_name.get("signature")
        return fd is not None and fd.message_type is not None and fd.message_type.name == "ConsumerSignature"


def all_rpcs() -> list[Rpc]:
    """Every RPC of every service in the generated code."""
    for module in pkgutil.walk_packages(c2d.__path__, "c2d."):
        if module.name.endswith("_pb2"):
            importlib.import_module(module.name)
    pool = descriptor_pool.Default()
    rpcs = []
    for module in pkgutil.walk_packages(c2d.__path__, "c2d."):
        if module.name.endswith("_pb2"):
            file = pool.FindFileByName(importlib.import_module(module.name).DESCRIPTOR.name)
            for service in file.services_by_name.values():
                rpcs += [Rpc(service.full_name, method) for method in service.methods]
    return sorted(rpcs, key=lambda rpc: rpc.path)


# -- one case ---------------------------------------------------------------------------


@dataclass
class Case:
    """One request and how it is sent."""

    request: Message
    signer: str = "consumer"  # consumer, publisher, other, or "as drawn" (the fuzzed signature field)
    credential: str = "right"  # right (service or job token), none, wrong
    held_job: bool = False  # JobAgentService: the request names the held job its token belongs to
    patch: bytes = b""  # appended to the serialized request (invalid UTF-8 in a string field)
    truncate: int = -1  # cut the serialized request to this many bytes (-1: whole)
    shape: str = "drain"  # drain, first (read one answer, then cancel), cancel (cancel at once)


@st.composite
def cases(draw: st.DrawFn, rpc: Rpc, known: Known) -> Case:
    request = draw(messages(rpc.method.input_type, known))
    return Case(
        request=request,
        signer=draw(st.sampled_from(["consumer", "consumer", "publisher", "other", "as drawn"])),
        credential=draw(st.sampled_from(["right", "right", "right", "none", "wrong"])),
        held_job=draw(st.booleans()),
        patch=draw(st.just(b"") | invalid_utf8_patch(rpc.method.input_type)),
        truncate=draw(st.just(-1) | st.just(-1) | st.integers(0, 64)),
        shape=draw(st.sampled_from(["drain", "drain", "first", "cancel"])),
    )


# -- the stack ---------------------------------------------------------------------------


class HeldBackend(NoopBackend):
    """The no-op backend, except that the pods of jobs named fuzz-held-* start
    and then wait, as a real pod that has not reported yet: the fuzzer plays
    that pod, with the job's own token."""

    tokens: dict[str, str] = {}  # noqa: RUF012 - one engine per fuzz run

    async def run_pod(self, stage: Stage, job: JobSpec) -> StageExit:
        if not job.job_id.startswith(HELD_PREFIX):
            return await super().run_pod(stage, job)
        HeldBackend.tokens[job.job_id] = job.token
        await asyncio.Event().wait()
        return StageExit(0)


@dataclass
class Tally:
    cases: Counter[str] = field(default_factory=Counter)
    codes: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: dict[str, list[str]] = field(default_factory=dict)


class FuzzStack:
    """The stack on its own loop in a thread, and blocking channels to it."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.known = Known()
        self.addresses: dict[str, str] = {}
        self.channels: dict[str, grpc.Channel] = {}
        self.served_by: dict[str, str] = {}  # service full name -> server name
        self.signers = {
            "consumer": Signer(market_module.CONSUMER_KEY),
            "publisher": Signer(market_module.PUBLISHER_KEY),
            "other": Signer(market_module.OTHER_KEY),
        }
        self.tally = Tally()
        self._held = 0
        self._thread = threading.Thread(target=self._run, name="fuzz-stack", daemon=True)

    # lifecycle

    def start(self) -> FuzzStack:
        self._original_backend = engine_server.NoopBackend
        engine_server.NoopBackend = HeldBackend  # type: ignore[misc]
        self._thread.start()
        if not self._ready.wait(120):
            raise TimeoutError("the fuzz stack did not start within 120 s")
        if self._error is not None:
            raise self._error
        self.channels = {name: grpc.insecure_channel(address) for name, address in self.addresses.items()}
        self._map_services()
        return self

    def stop(self) -> None:
        for channel in self.channels.values():
            channel.close()
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        engine_server.NoopBackend = self._original_backend  # type: ignore[misc]

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with market_module.open_market(self._database_url, backend="noop") as market:
            job_id = await market.start_job()
            dataset, dataset_order, algorithm, algorithm_order = await market.ready_job()
            stack = market.stack
            ddos = {did: json.dumps((await market.publisher.get_asset(did)).ddo) for did in (dataset, algorithm)}
            self.addresses = {
                "provider": stack.provider_address,
                "operator-service": f"127.0.0.1:{stack.operator.port}",
                "operator-engine": f"127.0.0.1:{stack.engine.port}",
            }
            self.known = Known(
                dids=[dataset, algorithm],
                job_ids=[job_id],
                addresses=[market.consumer.address, market.publisher.address, market.other.address],
                order_ids=[dataset_order, algorithm_order],
                environment_ids=[market.environment_id],
                urls=[market.base_url + market_module.SECRET_PATH],
                seeds=self._seeds(market.spec(dataset, dataset_order, algorithm, algorithm_order), market),
                jsons={"ddo_json": list(ddos.values()), "algorithm_parameters_json": ['{"window": 3, "unit": "C"}']},
            )
            # The publisher's own requests, valid but for the field or three the fuzzer redraws (signed as the
            # publisher one time in five): a DDO reaches its rules, and what is stored of it the database.
            salt = "fuzz-seed"
            fresh = {**json.loads(ddos[dataset]), "id": assets.derive_did(market.publisher.address, salt)}
            self.known.seeds.update(
                {
                    "c2d.provider.v1.UpdateAssetRequest": [
                        asset_pb2.UpdateAssetRequest(did=did, ddo_json=ddo) for did, ddo in ddos.items()
                    ],
                    "c2d.provider.v1.PublishAssetRequest": [
                        asset_pb2.PublishAssetRequest(ddo_json=json.dumps(fresh), salt=salt)
                    ],
                }
            )
            self._ready.set()
            await self._stop.wait()

    def _seeds(self, spec: provider_pb2.ComputeSpec, market: market_module.Market) -> dict[str, list[Message]]:
        """Valid messages the fuzzer starts from (and damages a field or three of)."""
        workflow = self.workflow(spec.dataset.did)
        seeds: list[Message] = [
            spec,
            workflow,
            engine_pb2.SubmitJobRequest(job_id="fuzz-seed", environment_id=market.environment_id, workflow=workflow),
            operator_pb2.CreateJobRequest(
                request_id="fuzz-seed",
                owner=market.consumer.address,
                environment_id=market.environment_id,
                workflow=workflow,
            ),
            common_pb2.ResultsManifest(storage="local"),
        ]
        return {seed.DESCRIPTOR.full_name: [seed] for seed in seeds}

    def workflow(self, dataset: str) -> common_pb2.Workflow:
        return common_pb2.Workflow(
            datasets=[common_pb2.WorkflowAsset(did=dataset)],
            raw_algorithm="print(1)",
            container=common_pb2.AlgorithmContainer(entrypoint="python3 $ALGO", image="python"),
        )

    def _map_services(self) -> None:
        services = {rpc.service for rpc in all_rpcs()}
        for server, channel in self.channels.items():
            health = health_pb2_grpc.HealthStub(channel)
            for service in services:
                try:
                    answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=HEALTH_DEADLINE_S)
                except grpc.RpcError:
                    continue
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    self.served_by[service] = server

    # health

    def unhealthy(self) -> list[str]:
        """The servers that do not answer SERVING now."""
        sick = []
        for server, channel in self.channels.items():
            try:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=HEALTH_DEADLINE_S
                )
                if answer.status != health_pb2.HealthCheckResponse.SERVING:
                    sick.append(f"{server}: {health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)}")
            except grpc.RpcError as exc:
                sick.append(f"{server}: {exc.code().name} {exc.details()}")  # type: ignore[attr-defined]
        return sick

    # the held job (JobAgentService)

    def held_job(self) -> tuple[str, str]:
        """A job whose configure pod waits, and its token: a fresh one once the last has ended."""
        current = f"{HELD_PREFIX}{self._held}"
        token = HeldBackend.tokens.get(current)
        if token is not None and self._active(current, token):
            return current, token
        self._held += 1
        current = f"{HELD_PREFIX}{self._held}"
        engine = self.channels["operator-engine"].unary_unary(
            "/c2d.engine.v1.EngineService/SubmitJob",
            request_serializer=engine_pb2.SubmitJobRequest.SerializeToString,
            response_deserializer=engine_pb2.SubmitJobResponse.FromString,
        )
        workflow = self.workflow(self.known.dids[0])
        request = engine_pb2.SubmitJobRequest(
            job_id=current, environment_id=self.known.environment_ids[0], workflow=workflow
        )
        engine(request, metadata=auth.bearer(auth.service_token()), timeout=UNARY_DEADLINE_S)
        deadline = time.monotonic() + 30
        while current not in HeldBackend.tokens:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the held job {current} never reached its configure pod")
            time.sleep(0.01)
        return current, HeldBackend.tokens[current]

    def _active(self, job_id: str, token: str) -> bool:
        agent = self.channels["operator-engine"].unary_unary(
            "/c2d.engine.v1.JobAgentService/GetWorkflow", request_serializer=None, response_deserializer=None
        )
        try:
            agent(
                job_agent_pb2.GetWorkflowRequest(job_id=job_id).SerializeToString(),
                metadata=auth.bearer(token),
                timeout=UNARY_DEADLINE_S,
            )
        except grpc.RpcError:
            return False
        return True

    # one case

    def credentials(self, rpc: Rpc, case: Case, held_token: str) -> tuple[tuple[str, str], ...]:
        if case.credential == "none":
            return ()
        if case.credential == "wrong":
            return auth.bearer("not-the-token")
        if rpc.service == JOB_AGENT:
            return auth.bearer(held_token)
        return auth.bearer(auth.service_token())

    def payload(self, rpc: Rpc, case: Case, held_id: str) -> bytes:
        request = type(case.request)()
        request.CopyFrom(case.request)
        if held_id and case.held_job and "job_id" in request.DESCRIPTOR.fields_by_name:
            request.job_id = held_id  # type: ignore[attr-defined]
        if rpc.signed and case.signer in self.signers:
            try:
                signed_fields(request)
            except Exception:
                pass
            else:
                self.signers[case.signer].sign(rpc.method.name, request)
        raw = request.SerializeToString() + case.patch
        return raw if case.truncate < 0 else raw[: case.truncate]

    def check(self, rpc: Rpc, case: Case) -> None:
        """Sends the case and raises AssertionError if the answer is a failure."""
        server = self.served_by.get(rpc.service)
        assert server is not None, f"no server of the stack serves {rpc.service}"
        held_id, held_token = self.held_job() if rpc.service == JOB_AGENT else ("", "")
        raw = self.payload(rpc, case, held_id)
        if len(raw) > MAX_REQUEST_BYTES:
            reject()  # a few huge values together: gRPC's own limit answers, nothing of ours runs
        metadata = self.credentials(rpc, case, held_token)
        self.tally.cases[rpc.name] += 1
        code, details = self._send(self.channels[server], rpc, raw, metadata, case.shape)
        self.tally.codes[(rpc.name, code.name)] += 1
        problems = self.problems(rpc, case, code, details)
        sick = self.unhealthy()
        if sick:
            problems.append(f"a server is down after the call: {sick}")
        if problems:
            self.tally.failures.setdefault(rpc.name, []).append("; ".join(problems))
            raise AssertionError(f"{rpc.name}: {'; '.join(problems)} (answer {code.name}: {details!r})")

    def problems(self, rpc: Rpc, case: Case, code: grpc.StatusCode, details: str) -> list[str]:
        problems = []
        if code in FORBIDDEN:
            problems.append(f"answered {code.name}, never right for a client's request")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and not rpc.streaming:
            problems.append(f"no answer within {UNARY_DEADLINE_S} s (a hang)")
        if "metadata size exceeds" in (details or ""):
            problems.append("the status (message and details) is too big for a client to receive")
        leak = LEAK.search(details or "")
        if leak:
            problems.append(f"the message shows internals ({leak.group(0)!r})")
        too_big = "Received message larger than max" in (details or "")  # gRPC refuses it before any of ours runs
        credentialed = case.credential == "right" or case.shape != "drain" or too_big
        if not credentialed and self.served_by.get(rpc.service) != "provider":
            # The service token is checked before anything else; a pod's job token after the request is read.
            refused = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
            if code not in refused and (rpc.service != JOB_AGENT or code == grpc.StatusCode.OK):
                problems.append(f"answered {code.name} without a valid credential")
        return problems

    @staticmethod
    def _send(channel: grpc.Channel, rpc: Rpc, raw: bytes, metadata: Any, shape: str) -> tuple[grpc.StatusCode, str]:
        """The call's final status and message (OK when it ended well or was read long enough)."""
        if not rpc.streaming:
            call = channel.unary_unary(rpc.path, request_serializer=None, response_deserializer=None)
            future = call.future(raw, metadata=metadata, timeout=UNARY_DEADLINE_S)
            if shape == "cancel":
                future.cancel()
                return grpc.StatusCode.OK, ""
            try:
                future.result()
            except grpc.RpcError as exc:
                return exc.code(), exc.details() or ""  # type: ignore[attr-defined]
            return grpc.StatusCode.OK, ""
        stream = channel.unary_stream(rpc.path, request_serializer=None, response_deserializer=None)
        answers: Iterator[bytes] = stream(raw, metadata=metadata, timeout=STREAM_BUDGET_S)
        if shape == "cancel":
            answers.cancel()  # type: ignore[attr-defined]
            return grpc.StatusCode.OK, ""
        try:
            for _ in answers:
                if shape == "first":
                    answers.cancel()  # type: ignore[attr-defined]
                    return grpc.StatusCode.OK, ""
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            if code == grpc.StatusCode.CANCELLED:
                return grpc.StatusCode.OK, ""
            return code, exc.details() or ""  # type: ignore[attr-defined]
        return grpc.StatusCode.OK, ""


def fuzz(stack: FuzzStack, rpc: Rpc, regressions: list[Case] = (), chosen: settings | None = None) -> None:  # type: ignore[assignment]
    """Runs hypothesis on one RPC: its regression examples first, then the
    profile's examples; raises the (shrunk) failure."""

    def one(case: Case) -> None:
        stack.check(rpc, case)

    run = given(case=cases(rpc, stack.known))(one)
    for case in regressions:
        run = example(case=case)(run)
    (chosen or profile())(run)()


@contextlib.contextmanager
def running_stack(data_dir: Path) -> Iterator[FuzzStack]:
    """The fuzz stack on a fresh PostgreSQL database, its data under `data_dir`."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("C2D_DATA_DIR", str(data_dir))
        env.delenv("C2D_SERVICE_TOKEN", raising=False)
        env.setenv("C2D_STAGING_ALLOW_HOSTS", "127.0.0.1")
        with fresh_postgres_database("c2d_fuzz") as url:
            running = FuzzStack(url).start()
            try:
                yield running
            finally:
                running.stop()
