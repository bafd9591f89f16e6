"""One real job through all five components, over real gRPC, on SQLite and
on PostgreSQL; plus the servers' health, reflection and bad-input answers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import grpc
import pytest
import sqlalchemy
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from c2d.common.v1 import common_pb2
from c2d.provider.v1 import provider_pb2
from cli import demo
from cli.client import Client
from plumbing.grpc_errors import error_code
from testkit.stacks import running_stack, wait_for_environment


async def _run_demo_job(database_url: str, tmp_path) -> dict:
    async for stack in running_stack(database_url):
        await wait_for_environment(stack.provider_address)
        return await demo.run_demo(stack.provider_address, tmp_path / "out", say=lambda *_: None)
    raise AssertionError("unreachable")


def _history(database_url: str, job_id: str) -> list[int]:
    engine = sqlalchemy.create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.text("SELECT status FROM job_events WHERE job_id = :j ORDER BY sequence"), {"j": job_id}
        )
        statuses = [r[0] for r in rows]
    engine.dispose()
    return statuses


FULL_PATH = [1, 10, 20, 30, 40, 60, 70]


async def test_demo_job_reaches_70_on_sqlite(data_dir, tmp_path):
    outcome = await _run_demo_job("", tmp_path)
    assert outcome["ok"], outcome
    assert outcome["status"] == 70
    assert outcome["result"] == demo.EXPECTED
    assert _history(f"sqlite:///{data_dir}/operator.db", outcome["job_id"]) == FULL_PATH


async def test_demo_job_reaches_70_on_postgresql(data_dir, postgres_url, tmp_path):
    outcome = await _run_demo_job(postgres_url, tmp_path)
    assert outcome["ok"], outcome
    assert outcome["result"] == demo.EXPECTED
    assert _history(postgres_url, outcome["job_id"]) == FULL_PATH


async def test_every_server_is_healthy_and_reflects_its_services(data_dir):
    async for stack in running_stack():
        expected = {
            stack.provider.port: {
                "c2d.provider.v1.ProviderService",
                "c2d.provider.v1.AssetService",
                "c2d.provider.v1.LedgerService",
            },
            stack.operator.port: {"c2d.operator.v1.OperatorService"},
            stack.engine.port: {"c2d.engine.v1.EngineService", "c2d.engine.v1.JobAgentService"},
        }
        for port, services in expected.items():
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
                assert health.status == health_pb2.HealthCheckResponse.SERVING
                reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
                responses = reflection.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")])
                )
                async for response in responses:
                    listed = {s.name for s in response.list_services_response.service}
                    assert services <= listed
                    assert "grpc.health.v1.Health" in listed
                    break


async def test_bad_input_gets_a_precise_status(data_dir):
    async for stack in running_stack():
        await wait_for_environment(stack.provider_address)
        async with grpc.aio.insecure_channel(stack.provider_address) as channel:
            consumer = Client(channel, "0x" + "42" * 32)
            envs = (
                await consumer.compute.ListComputeEnvironments(provider_pb2.ListComputeEnvironmentsRequest())
            ).environments

            with pytest.raises(grpc.aio.AioRpcError) as malformed:
                await consumer.start(
                    provider_pb2.ComputeSpec(
                        dataset=provider_pb2.AssetOrder(did="did:op:not-a-did", service_id="compute", order_id="o"),
                        raw_algorithm=provider_pb2.RawAlgorithm(
                            code="print(1)",
                            container=common_pb2.AlgorithmContainer(entrypoint="python3 $ALGO", image="python"),
                        ),
                        environment_id=envs[0].id,
                    )
                )
            assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "did:op:" in malformed.value.details()
            assert error_code(malformed.value) == "DID_INVALID"

            with pytest.raises(grpc.aio.AioRpcError) as unknown_did:
                await consumer.start(
                    provider_pb2.ComputeSpec(
                        dataset=provider_pb2.AssetOrder(did="did:op:" + "0" * 64, service_id="compute", order_id="o"),
                        raw_algorithm=provider_pb2.RawAlgorithm(
                            code="print(1)",
                            container=common_pb2.AlgorithmContainer(entrypoint="python3 $ALGO", image="python"),
                        ),
                        environment_id=envs[0].id,
                    )
                )
            assert unknown_did.value.code() == grpc.StatusCode.NOT_FOUND
            assert error_code(unknown_did.value) == "DID_NOT_FOUND"

            with pytest.raises(grpc.aio.AioRpcError) as empty_algorithm:
                await consumer.start(
                    provider_pb2.ComputeSpec(
                        dataset=provider_pb2.AssetOrder(did="did:op:" + "0" * 64, service_id="compute", order_id="o"),
                        environment_id=envs[0].id,
                    )
                )
            assert empty_algorithm.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "algorithm" in empty_algorithm.value.details()

            with pytest.raises(grpc.aio.AioRpcError) as unknown_job:
                await consumer.details("2b7e1516-28ae-4d2a-a6d2-1fdd2f2a8f3c")
            assert unknown_job.value.code() == grpc.StatusCode.NOT_FOUND

            with pytest.raises(grpc.aio.AioRpcError) as bad_job_id:
                await consumer.details("../../etc")
            assert bad_job_id.value.code() == grpc.StatusCode.INVALID_ARGUMENT

            with pytest.raises(grpc.aio.AioRpcError) as unsigned:
                await consumer.compute.GetJobDetails(provider_pb2.GetJobDetailsRequest(job_id="x"))
            assert unsigned.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_signed_results_verify_with_the_providers_key(data_dir, tmp_path):
    from services.provider.domain import sealing

    async for stack in running_stack():
        await wait_for_environment(stack.provider_address)
        outcome = await demo.run_demo(stack.provider_address, tmp_path / "out", say=lambda *_: None)
        assert outcome["ok"]
        async with grpc.aio.insecure_channel(stack.provider_address) as channel:
            consumer = Client(channel, Path(f"{data_dir}/consumer.key").read_text().strip())
            details = await consumer.details(outcome["job_id"])
            info = await consumer.compute.GetProviderInfo(provider_pb2.GetProviderInfoRequest())
            signed = details.signed_results
            assert signed.public_key == info.signing_public_key
            assert sealing.verify_bytes(info.signing_public_key, signed.statement_json.encode(), signed.signature)
            statement = json.loads(signed.statement_json)
            assert statement["job_id"] == outcome["job_id"]
            entry = next(f for f in statement["results"]["files"] if f["path"] == "result.json")
            saved = Path(outcome["saved"]).read_bytes()
            assert entry["sha256"] == hashlib.sha256(saved).hexdigest()
            tampered = signed.statement_json.replace(entry["sha256"], "0" * 64)
            assert not sealing.verify_bytes(info.signing_public_key, tampered.encode(), signed.signature)
