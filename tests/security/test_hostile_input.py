"""Hostile input: one request that crashes, or confuses, a server.

The attack (issue 13, items 3 and 6): JSON nested 200,000 deep in
PublishAsset.ddo_json, ListJobs.page_token or
InitializeCompute.algorithm_parameters_json killed the whole `c2d up` with
SIGSEGV; offsets, sequences and nonces of 2^63 and more were answered
UNAVAILABLE or INTERNAL; bytes that are not UTF-8 UNKNOWN.

The guarantee: each is INVALID_ARGUMENT with a message a person can act on,
and the servers stay up. First the attacks against a real `c2d up` (the
embedded default: provider, operator-service and engine in one process,
local backend) over real gRPC, as issue 13 describes them: every JSON-in-string field, correctly signed,
nested a million deep; offsets, sequences and nonces past 64 bits; bytes that
are not UTF-8, to every method of every service. Each is answered
INVALID_ARGUMENT with a message naming what is wrong, and the process is
still up and serving afterwards: its health checks answer SERVING and the
consumer's next request succeeds.

Before the fix the deep JSON killed the whole process with SIGSEGV (py_ecc
had raised the recursion limit past the C stack), the numbers were answered
INTERNAL (FAILED_PRECONDITION for the engine's sequences) and the bytes UNKNOWN. A test whose attack kills the
process says so with its exit code; the next test starts a new one on the
same data. Then the parser and range check every service reads such input
through, and the recursion limit every process keeps."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nacl.public import PublicKey, SealedBox

from c2d.common.v1 import common_pb2
from c2d.engine.v1 import engine_pb2, engine_pb2_grpc, job_agent_pb2
from c2d.operator.v1 import operator_pb2, operator_pb2_grpc
from c2d.provider.v1 import asset_pb2, auth_pb2, ledger_pb2, provider_pb2, provider_pb2_grpc
from cli import demo
from cli.client import Client, load_or_create_key
from plumbing import auth, errors, untrusted
from plumbing.grpc_errors import bad_request_fields, error_code
from services.provider.domain import identity
from services.provider.domain.identity import signed_fields
from testkit.up import SERVER_NAMES

REPO = Path(__file__).resolve().parents[2]
MILLION = 1_000_000
DEEP = "[" * MILLION + "]" * MILLION  # valid JSON a million deep: 2 MB, under gRPC's 4 MiB message limit
TOO_BIG = (2**63, 2**64 - 1)  # past a signed 64-bit integer, still a valid uint64
INVALID = grpc.StatusCode.INVALID_ARGUMENT


class Up:
    """`c2d up` in a child process, its output in a file. Its servers listen on
    ports the kernel picks when they bind (port 0), read from what it prints:
    ports picked beforehand could be taken, meanwhile, by a test running beside
    this one."""

    def __init__(self, data: Path) -> None:
        self.ports: dict[str, int] = {}
        self.log = data.parent / "c2d-up.log"
        self.env = {
            **os.environ,
            "C2D_DATA_DIR": str(data),
            "C2D_STAGING_ALLOW_HOSTS": "127.0.0.1",
            "C2D_PROVIDER_ADDRESS": "127.0.0.1:0",
            "C2D_OPERATOR_ADDRESS": "127.0.0.1:0",
            "C2D_ENGINE_ADDRESS": "127.0.0.1:0",
            "C2D_LOG_LEVEL": "WARNING",
        }
        self.env.pop("C2D_SERVICE_TOKEN", None)
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        """Starts it and waits (on no clock: imports take long on a loaded machine) until it says
        it is up, or fails if it exits first."""
        with open(self.log, "a") as out:
            before = out.tell()  # a restart appends to the same log
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "up"], cwd=REPO, env=self.env, stdout=out, stderr=out
            )
        while "Ctrl-C stops it." not in (said := self.log.read_text()[before:]):
            assert self.running(), "c2d up did not start:\n" + self.tail()
            time.sleep(0.1)
        # "  provider          127.0.0.1:PORT" and so on, one line per server
        words = [line.split() for line in said.splitlines()]
        self.ports = {w[0]: int(w[1].rsplit(":", 1)[1]) for w in words if len(w) == 2 and w[0] in SERVER_NAMES}
        assert self.ports.keys() == set(SERVER_NAMES), said

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self) -> str:
        return self.log.read_text()[-3000:]

    def stop(self) -> None:
        if self.running():
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def address(self, server: str) -> str:
        return f"127.0.0.1:{self.ports[server]}"


@dataclass
class Target:
    up: Up
    job: common_pb2.Job  # the demo's job: finished, owned by the consumer
    consumer_key: str
    publisher_key: str
    service_token: str
    encryption_key: str  # the provider's: anyone may seal for it


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Iterator[Target]:
    data = tmp_path_factory.mktemp("hostile") / "c2d"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("C2D_DATA_DIR", str(data))  # the demo keeps its keys there, the servers their token
        patch.delenv("C2D_SERVICE_TOKEN", raising=False)
        up = Up(data)
        try:
            outcome = asyncio.run(demo.run_demo(up.address("provider"), data / "out", say=lambda *_: None))
            assert outcome["ok"], outcome
            consumer_key = load_or_create_key(data / "consumer.key")
            job = asyncio.run(_details(up, consumer_key, outcome["job_id"]))
            publisher_key = load_or_create_key(data / "demo-publisher.key")
            yield Target(up, job, consumer_key, publisher_key, auth.service_token(), asyncio.run(_encryption_key(up)))
        finally:
            up.stop()


@pytest.fixture
def target(hostile: Target) -> Target:
    if not hostile.up.running():  # an earlier attack killed it
        hostile.up.start()
    return hostile


async def _details(up: Up, key: str, job_id: str) -> common_pb2.Job:
    async with grpc.aio.insecure_channel(up.address("provider")) as channel:
        return (await Client(channel, key).details(job_id)).job


async def _encryption_key(up: Up) -> str:
    async with grpc.aio.insecure_channel(up.address("provider")) as channel:
        info = await provider_pb2_grpc.ProviderServiceStub(channel).GetProviderInfo(
            provider_pb2.GetProviderInfoRequest()
        )
        return info.encryption_public_key


async def refused(call: Any) -> grpc.aio.AioRpcError:
    """The error a unary call or a whole stream fails with (it must fail)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if hasattr(call, "__aiter__"):
            async for _ in call:
                pass
        else:
            await call
    return caught.value


def assert_invalid(error: grpc.aio.AioRpcError, reason: str, field: str, *words: str) -> None:
    assert error.code() == INVALID, (error.code(), error.details())
    assert error_code(error) == reason, (error_code(error), error.details())
    assert field in bad_request_fields(error), (bad_request_fields(error), error.details())
    for word in (field, *words):
        assert word in error.details(), (word, error.details())


def assert_alive(up: Up) -> None:
    assert up.process is not None
    try:
        up.process.wait(0.2)  # a process that crashed may close its sockets a moment before it is gone
    except subprocess.TimeoutExpired:
        return
    raise AssertionError(f"c2d up died (exit code {up.process.returncode}):\n{up.tail()}")


async def assert_serving(target: Target) -> None:
    """The process is alive, each server's health check answers SERVING, and
    the consumer's next ordinary request succeeds."""
    up = target.up
    assert_alive(up)
    for server in up.ports:
        async with grpc.aio.insecure_channel(up.address(server)) as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, server
    job = await _details(up, target.consumer_key, target.job.job_id)
    assert job.status == 70


# -- JSON nested a million deep, in each field that carries JSON ------------------------------


def _deep_sealed_files(target: Target, publisher: Client) -> asset_pb2.PublishAssetRequest:
    """A DDO whose sealed file list is JSON a million deep (hex doubles a sealed
    list: the million opening brackets alone fit the message limit)."""
    box = SealedBox(PublicKey(bytes.fromhex(target.encryption_key)))
    files = "0x" + box.encrypt(b"[" * MILLION).hex()
    salt = f"deep-files-{time.time_ns()}"
    ddo = {
        "version": "4.1.0",
        "metadata": {"type": "dataset", "name": "Deep files", "author": "attacker", "license": "CC0"},
        "services": [demo._service("access", "access", files, publisher.did_for(salt))],
    }
    return asset_pb2.PublishAssetRequest(ddo_json=json.dumps(ddo), salt=salt)


def _spec(target: Target, parameters_json: str) -> provider_pb2.ComputeSpec:
    job = target.job
    return provider_pb2.ComputeSpec(
        dataset=provider_pb2.AssetOrder(did=job.dataset_dids[0], service_id="compute", order_id="0x01"),
        algorithm_asset=provider_pb2.AssetOrder(did=job.algorithm_did, service_id="access", order_id="0x02"),
        environment_id=job.environment_id,
        algorithm_parameters_json=parameters_json,
    )


# field -> (who signs, the RPC, the request, the field the answer names)
DeepRequest = Callable[[Target, Client], Any]
DEEP_FIELDS: dict[str, tuple[str, str, DeepRequest, str]] = {
    "PublishAsset.ddo_json": (
        "publisher",
        "PublishAsset",
        lambda t, _: asset_pb2.PublishAssetRequest(ddo_json=DEEP, salt=f"deep-{time.time_ns()}"),
        "ddo_json",
    ),
    "UpdateAsset.ddo_json": (
        "publisher",
        "UpdateAsset",
        lambda t, _: asset_pb2.UpdateAssetRequest(did=t.job.dataset_dids[0], ddo_json=DEEP),
        "ddo_json",
    ),
    "PublishAsset.ddo_json.services[].files (sealed)": ("publisher", "PublishAsset", _deep_sealed_files, "files"),
    "InitializeCompute.spec.algorithm_parameters_json": (
        "consumer",
        "InitializeCompute",
        lambda t, _: provider_pb2.InitializeComputeRequest(spec=_spec(t, DEEP)),
        "spec.algorithm_parameters_json",
    ),
    "StartCompute.spec.algorithm_parameters_json": (
        "consumer",
        "StartCompute",
        lambda t, _: provider_pb2.StartComputeRequest(spec=_spec(t, DEEP)),
        "spec.algorithm_parameters_json",
    ),
    "ListJobs.page_token": (
        "consumer",
        "ListJobs",
        lambda t, _: provider_pb2.ListJobsRequest(page_token=base64.urlsafe_b64encode(DEEP.encode()).decode()),
        "page_token",
    ),
}


@pytest.mark.parametrize("attacked", list(DEEP_FIELDS))
async def test_json_nested_a_million_deep_is_invalid_argument_and_the_stack_stays_up(target: Target, attacked: str):
    signer, method, build, field = DEEP_FIELDS[attacked]
    async with grpc.aio.insecure_channel(target.up.address("provider")) as channel:
        client = Client(channel, target.publisher_key if signer == "publisher" else target.consumer_key)
        request = build(target, client)
        stub = client.assets if method in ("PublishAsset", "UpdateAsset") else client.compute
        error = await refused(getattr(stub, method)(client.signed(method, request), timeout=60))
    assert_alive(target.up)
    assert_invalid(error, "JSON_TOO_DEEP", field, "at most 64 levels")
    await assert_serving(target)


# -- numbers past 64 bits --------------------------------------------------------------------


def _signed_with_nonce(client: Client, key: str, method: str, request: Any, nonce: int) -> Any:
    """Signed correctly, with the nonce given."""
    request.signature.CopyFrom(auth_pb2.ConsumerSignature(address=client.address, nonce=nonce))
    request.signature.signature = identity.sign_request(key, method, signed_fields(request), nonce)
    return request


def _provider_call(method: str, request: Callable[[str, int], Any], nonce: bool = False) -> Any:
    def call(target: Target, channel: grpc.aio.Channel, value: int) -> Any:
        consumer = Client(channel, target.consumer_key)
        if nonce:
            signed = _signed_with_nonce(consumer, target.consumer_key, method, request(target.job.job_id, 0), value)
        else:
            signed = consumer.signed(method, request(target.job.job_id, value))
        return getattr(consumer.compute, method)(signed, timeout=30)

    return call


def _internal_call(stub: Any, method: str, request: Callable[[str, int], Any]) -> Any:
    def call(target: Target, channel: grpc.aio.Channel, value: int) -> Any:
        rpc = getattr(stub(channel), method)
        return rpc(request(target.job.job_id, value), metadata=auth.bearer(target.service_token), timeout=30)

    return call


# attack -> (server, the call carrying the value, the field the answer names)
NUMBERS: dict[str, tuple[str, Callable[[Target, grpc.aio.Channel, int], Any], str]] = {
    "provider StreamJobLogs.offset": (
        "provider",
        _provider_call("StreamJobLogs", lambda job, v: provider_pb2.StreamJobLogsRequest(job_id=job, offset=v)),
        "offset",
    ),
    "provider WatchJob.after_sequence": (
        "provider",
        _provider_call("WatchJob", lambda job, v: provider_pb2.WatchJobRequest(job_id=job, after_sequence=v)),
        "after_sequence",
    ),
    "provider signature.nonce": (
        "provider",
        _provider_call("GetJobDetails", lambda job, _: provider_pb2.GetJobDetailsRequest(job_id=job), nonce=True),
        "signature.nonce",
    ),
    "operator-service StreamJobLogs.offset": (
        "operator-service",
        _internal_call(
            operator_pb2_grpc.OperatorServiceStub,
            "StreamJobLogs",
            lambda job, v: operator_pb2.StreamJobLogsRequest(job_id=job, offset=v),
        ),
        "offset",
    ),
    "operator-service WatchJobs.after_sequence": (
        "operator-service",
        _internal_call(
            operator_pb2_grpc.OperatorServiceStub,
            "WatchJobs",
            lambda job, v: operator_pb2.WatchJobsRequest(job_ids=[job], after_sequence=v),
        ),
        "after_sequence",
    ),
    "operator-engine StreamJobLogs.offset": (
        "operator-engine",
        _internal_call(
            engine_pb2_grpc.EngineServiceStub,
            "StreamJobLogs",
            lambda job, v: engine_pb2.StreamJobLogsRequest(job_id=job, offset=v),
        ),
        "offset",
    ),
    "operator-engine StreamStateChanges.after_sequence": (
        "operator-engine",
        _internal_call(
            engine_pb2_grpc.EngineServiceStub,
            "StreamStateChanges",
            lambda _, v: engine_pb2.StreamStateChangesRequest(after_sequence=v),
        ),
        "after_sequence",
    ),
}


@pytest.mark.parametrize("value", TOO_BIG)
@pytest.mark.parametrize("attacked", list(NUMBERS))
async def test_offsets_sequences_and_nonces_past_64_bits_are_invalid_argument(
    target: Target, attacked: str, value: int
):
    server, call, field = NUMBERS[attacked]
    async with grpc.aio.insecure_channel(target.up.address(server)) as channel:
        error = await refused(call(target, channel, value))
    assert_invalid(error, "NUMBER_OUT_OF_RANGE", field, str(value), "at most 9223372036854775807")
    await assert_serving(target)


# -- bytes that are not UTF-8, to every method of every service --------------------------------

SERVERS = {
    "provider": (provider_pb2, asset_pb2, ledger_pb2),
    "operator-service": (operator_pb2,),
    "operator-engine": (engine_pb2, job_agent_pb2),
}
METHODS = [
    (server, method)
    for server, modules in SERVERS.items()
    for module in modules
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]
NOT_UTF8 = b"\xff\xfe\xc3\x28"


def _undecodable(message_type: Any) -> bytes:
    """A request whose first string field holds bytes that are not UTF-8 (a
    request with no string field: a field cut short)."""
    for field in message_type.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            return bytes([field.number << 3 | 2, len(NOT_UTF8)]) + NOT_UTF8
    return b"\x0a\x05ab"


@pytest.mark.parametrize(("server", "method"), METHODS, ids=[m.full_name for _, m in METHODS])
async def test_bytes_that_are_not_utf8_are_invalid_argument_naming_the_method(target: Target, server: str, method: Any):
    path = f"/{method.containing_service.full_name}/{method.name}"
    async with grpc.aio.insecure_channel(target.up.address(server)) as channel:
        # no serializers: the raw bytes go out as they are
        call = (channel.unary_stream if method.server_streaming else channel.unary_unary)(path)
        metadata = auth.bearer(target.service_token)  # past the internal ports' credential check
        error = await refused(call(_undecodable(method.input_type), metadata=metadata, timeout=30))
    assert error.code() == INVALID, (error.code(), error.details())
    assert error_code(error) == "REQUEST_UNDECODABLE", error.details()
    assert path in error.details() and "UTF-8" in error.details(), error.details()
    await assert_serving(target)


# -- the bounded parser and range check (plumbing.untrusted) ----------------------------
# The bounded JSON parser and the 64-bit range check every service reads
# hostile input through: within the limits it is json.loads; past any limit it
# refuses with INVALID_ARGUMENT naming the field and the limit, before the
# recursive decoder sees the text, in time linear in the text.


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def refusal(text: str | bytes, **limits: int) -> errors.InvalidArgument:
    with pytest.raises(errors.InvalidArgument) as caught:
        untrusted.parse_json(text, "spec.algorithm_parameters_json", **limits)
    assert caught.value.field == "spec.algorithm_parameters_json"
    assert caught.value.message.startswith("spec.algorithm_parameters_json ")
    return caught.value


@pytest.mark.parametrize(
    "text",
    [
        '{"a": [1, 2.5, true, null, {"b": "c"}], "d": ""}',
        '"a string with [[[ {{{ , and an escaped \\" quote ]]]"',
        '["\\\\", "\\"[", "]\\"", "\\u005b"]',
        "[]",
        "  {}  ",
        "42",
    ],
)
def test_within_the_limits_it_decodes_as_json_loads_does(text: str):
    assert untrusted.parse_json(text, "field") == json.loads(text)
    assert untrusted.parse_json(text.encode(), "field") == json.loads(text)


def test_depth_is_refused_past_the_limit_naming_the_field_and_the_limit():
    assert untrusted.parse_json(nested(64), "f") == json.loads(nested(64))
    error = refusal(nested(65))
    assert error.code == "json_too_deep"
    assert "65 levels deep" in error.message and "at most 64 levels" in error.message
    objects = '{"a":' * 65 + "1" + "}" * 65
    assert refusal(objects).code == "json_too_deep"
    assert refusal(nested(10), max_depth=9).code == "json_too_deep"


def test_brackets_inside_strings_are_not_nesting():
    text = json.dumps(["[" * 10_000, "{" * 10_000, '\\"[[[', "]]]"])
    assert untrusted.parse_json(text, "f") == json.loads(text)


# Linear time on the million-character texts below is well under a second; quadratic
# would take hours. The bound tolerates a loaded machine (load average 25 took 2.8 s).
LINEAR_S = 20.0


def test_a_million_levels_are_refused_quickly_without_recursing():
    started = time.monotonic()
    error = refusal(nested(1_000_000))
    assert error.code == "json_too_deep" and "1000000 levels deep" in error.message
    assert refusal("[" * 1_000_000).code == "json_too_deep"  # never closed: still refused, not decoded
    assert time.monotonic() - started < LINEAR_S


def test_length_is_refused_past_the_limit():
    error = refusal('"' + "x" * 100 + '"', max_length=101)
    assert error.code == "json_too_long"
    assert "102 characters long" in error.message and "at most 101" in error.message
    assert "bytes long" in refusal(b"[1, 2, 3]", max_length=8).message
    assert untrusted.parse_json('"' + "x" * 99 + '"', "f", max_length=101) == "x" * 99


def test_keys_and_items_are_refused_past_the_limit():
    assert untrusted.parse_json(json.dumps(list(range(10))), "f", max_items=11) == list(range(10))
    error = refusal(json.dumps(list(range(100))), max_items=50)
    assert error.code == "json_too_many_items" and "at most 50" in error.message
    many_keys = json.dumps({f"k{i}": i for i in range(100)})
    assert refusal(many_keys, max_items=50).code == "json_too_many_items"
    assert refusal(json.dumps([[]] * 100), max_items=50).code == "json_too_many_items"
    # the default: a document of 150,000 zeros is short, shallow, and refused
    assert refusal("[0" + ",0" * 150_000 + "]").code == "json_too_many_items"


@pytest.mark.parametrize(
    "text",
    [
        '"' + '\\"' * 500_000,  # a string that never ends, full of escaped quotes
        '"' * 1_000_001,  # a million quotes
        "[" + '"\\' * 300_000,
    ],
)
def test_pathological_strings_take_linear_time(text: str):
    started = time.monotonic()
    with pytest.raises(ValueError):
        untrusted.parse_json(text, "f")
    assert time.monotonic() - started < LINEAR_S


@pytest.mark.parametrize("text", ["{", "[1,]", "nope", '"unterminated', "", b"\xff\xfe"])
def test_text_that_is_not_json_raises_value_error_for_the_caller_to_answer(text: str | bytes):
    with pytest.raises(ValueError):
        untrusted.parse_json(text, "f")


def test_int64_passes_what_fits_and_refuses_what_does_not_naming_the_field():
    assert untrusted.int64(0, "offset") == 0
    assert untrusted.int64(2**63 - 1, "offset") == 2**63 - 1
    for value in (2**63, 2**64 - 1):
        with pytest.raises(errors.InvalidArgument) as caught:
            untrusted.int64(value, "offset")
        assert caught.value.field == "offset" and caught.value.code == "number_out_of_range"
        assert f"offset {value} is too large" in caught.value.message
        assert "at most 9223372036854775807" in caught.value.message


# -- the recursion limit ------------------------------------------------------------------
# py_ecc (imported through eth-account) raises the recursion limit to 100,000
# at import, past what the C stack holds: a deep value then killed the process
# with SIGSEGV. Every c2d process imports eth-account through plumbing.ethereum,
# which puts the limit back.

# Every c2d module that signs or verifies (request_settling: the signature worker), and the programs that import them.
PROBE = """
import json, sys
default = sys.getrecursionlimit()
import services.provider.server, services.provider.persistence.request_settling, cli.client, cli.main, cli.demo
assert "py_ecc" in sys.modules, "the probe must import eth-account to mean anything"
print(default, sys.getrecursionlimit(), flush=True)
try:
    json.loads("[" * 1_000_000)
except RecursionError:
    print("RecursionError", flush=True)
"""


def test_importing_the_provider_and_the_cli_leaves_the_recursion_limit_at_its_default():
    probe = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, (probe.returncode, probe.stdout, probe.stderr[-2000:])
    limits, outcome = probe.stdout.splitlines()
    default, after = limits.split()
    assert after == default, f"the recursion limit went from {default} to {after}"
    assert outcome == "RecursionError"  # a deep value is an error in that process, not a crash
