"""Every RPC of every service, fuzzed over real gRPC against a running stack
(tests/fuzz/harness.py says what fails a call). C2D_FUZZ_PROFILE=ci (the
default: a few examples per RPC) or long; failures shrink, and replay from
.hypothesis/ on the next run. Each bug the fuzzer found is pinned below as an
@example of the RPC it was found on."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import message_factory
from hypothesis import example, given

from tests.fuzz.harness import JOB_AGENT, Case, FuzzStack, Rpc, all_rpcs, cases, profile
from tests.support.stacks import fresh_postgres_database

RPCS = all_rpcs()
# Regression examples, by RPC name: requests that once failed.
REGRESSIONS: dict[str, list[Case]] = {}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzStack]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("C2D_DATA_DIR", str(tmp_path_factory.mktemp("fuzz") / "c2d"))
        env.delenv("C2D_SERVICE_TOKEN", raising=False)
        env.setenv("C2D_STAGING_ALLOW_HOSTS", "127.0.0.1")
        with fresh_postgres_database("c2d_fuzz") as url:
            running = FuzzStack(url).start()
            try:
                yield running
            finally:
                running.stop()


def fuzz(stack: FuzzStack, rpc: Rpc) -> None:
    def one(case: Case) -> None:
        stack.check(rpc, case)

    run = given(case=cases(rpc, stack.known))(one)
    for case in REGRESSIONS.get(rpc.name, []):
        run = example(case=case)(run)
    profile()(run)()


def test_the_fuzzer_knows_every_service_and_every_server_serves_one(stack):
    services = {rpc.service for rpc in RPCS}
    assert {"c2d.provider.v1.ProviderService", "c2d.operator.v1.OperatorService", JOB_AGENT} <= services
    assert set(stack.served_by) == services, f"served: {stack.served_by}, generated: {services}"
    assert len(RPCS) >= 40


@pytest.mark.parametrize("rpc", RPCS, ids=lambda rpc: rpc.name)
def test_fuzzed_requests_get_a_client_error_never_a_crash(stack, rpc):
    fuzz(stack, rpc)


@pytest.mark.parametrize("rpc", [rpc for rpc in RPCS if not rpc.service.startswith("c2d.provider.")], ids=lambda r: r.name)
def test_internal_rpcs_refuse_a_caller_without_credentials(stack, rpc):
    for credential in ("none", "wrong"):
        case = Case(request=message_factory.GetMessageClass(rpc.method.input_type)(), credential=credential)
        code, _ = stack._send(
            stack.channels[stack.served_by[rpc.service]],
            rpc,
            stack.payload(rpc, case, ""),
            stack.credentials(rpc, case, ""),
            "drain",
        )
        assert code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), (credential, code)

