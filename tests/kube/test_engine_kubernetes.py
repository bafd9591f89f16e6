"""The operator-engine on the kubernetes backend: a job's objects, its pods'
outcomes, stops and cleanup, against the emulated API server and test kubelet."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import grpc
import kubernetes.client
import pytest

from c2d.common.v1 import common_pb2
from c2d.engine.v1 import engine_pb2
from cli import demo
from plumbing.grpc_errors import bad_request_fields
from services.operator_engine.backends.kubernetes.backend import ClusterUnfit
from services.operator_engine.backends.kubernetes.objects import JOB_ID_ANNOTATION, object_name
from services.operator_engine.backends.kubernetes.wiring import USER_AGENT
from testkit import kube
from testkit.kube import count, manifests
from testkit.stacks import running_stack, wait_for_environment
from tests.kube.engine_cluster import (
    NAMESPACE,
    cluster,
    created_objects,
    engine_settings,
    k8s_engine,
    status_patches,
)
from tests.kube.helpers import compute_job, owner_reference, pod
from tests.kube.test_manifests import ENGINE_CALLS
from tests.operator_engine.engine_harness import gate, release, wait_until, workflow

pytestmark = pytest.mark.timeout(180)

WRITE_OUTPUT = """\
import json, os
print('hello from the pod')
did = json.loads(os.environ['DIDS'])[0]
data = open(os.path.join(os.environ['INPUTS'], did, '0')).read()
open(os.path.join(os.environ['OUTPUTS'], 'result.txt'), 'w').write(data.upper())
"""


async def test_a_job_reaches_70_with_valid_objects_and_leaves_nothing(data_dir, postgres_url, tmp_path):
    with cluster(tmp_path) as c:
        async with k8s_engine(c, postgres_url, tmp_path / "ws") as engine:
            job_id = await engine.submit(workflow(WRITE_OUTPUT))
            changes = await engine.history(job_id)
            assert [ch.status for ch in changes] == [10, 20, 30, 40, 60, 70], changes[-1]
            schemas = manifests.custom_schemas()
            made = created_objects(c)
            kinds = sorted(obj["kind"] for obj in made)
            assert kinds == sorted(
                ["ComputeJob", "NetworkPolicy", "NetworkPolicy", "PersistentVolumeClaim", "Secret", "Pod", "Pod", "Pod"]
            )
            for obj in made:
                manifests.validate(obj, schemas)
            assert "result.txt" in [f.path for f in changes[-1].results.files]
            log = engine.algorithm_log(job_id).read_text()
            assert "hello from the pod" in log
            await wait_until(lambda: not c.owned_by_jobs(), what="the job's objects removed")


def orphan_labels(job_id: str) -> dict[str, str]:
    """The labels the engine (id "local", the default) puts on its job's pods."""
    return {
        "app.kubernetes.io/managed-by": "c2d-operator-engine",
        "c2d.dev/engine": "local",
        "c2d.dev/job": object_name(job_id),
        "c2d.dev/stage": "algorithm",
    }


def plan_for(c, job_id: str, stage: str, scenario) -> None:  # type: ignore[no-untyped-def]
    c.kubelet.plan(scenario, name=f"{object_name(job_id)}-{stage}")


async def test_failing_pods_end_their_jobs_with_the_right_status_and_reason(data_dir, postgres_url, tmp_path):
    cases = {
        "pull": (
            "algorithm",
            kube.IMAGE_PULL_BACKOFF,  # its messages do not name the image: the engine does
            41,
            "algorithm_failed",
            "algorithm pod cannot get its image (python): ErrImagePull",
        ),  # fails at the first pull error
        "oom": ("algorithm", kube.OOMKilled(after_s=0.2), 41, "algorithm_failed", "OOMKilled: exit code 137"),
        "exit": ("algorithm", kube.Exit(3, after_s=0.2), 41, "algorithm_failed", "algorithm failed: exit code 3"),
        "deleted": ("algorithm", kube.Deleted(after_s=0.3), 41, "algorithm_failed", "its pod was deleted while it ran"),
        "node": ("algorithm", kube.NodeLost(after_s=0.3), 41, "algorithm_failed", "its node was lost"),
        "config": ("configure", kube.Exit(1, after_s=0.1), 31, "configure_crashed", "exit code 1"),
        "badref": (
            "algorithm",
            kube.Waiting("InvalidImageName", "invalid reference format"),
            41,
            "algorithm_failed",
            "algorithm pod cannot get its image (python): InvalidImageName",
        ),
    }
    with cluster(tmp_path) as c:
        for case, (stage, scenario, *_) in cases.items():
            plan_for(c, f"fail-{case}", stage, scenario)
        c.kubelet.plan(kube.Hang(), name=f"{object_name('fail-deadline')}-algorithm")
        async with k8s_engine(c, postgres_url, tmp_path / "ws", max_jobs=8) as engine:
            for case in cases:
                await engine.submit(workflow("print('hi')"), job_id=f"fail-{case}")
            await engine.submit(workflow("print('hi')", max_duration_s=1), job_id="fail-deadline")
            for case, (_, _, status, code, message) in cases.items():
                ended = await engine.ended(f"fail-{case}")
                assert (ended.status, ended.error_code) == (status, code), (case, ended)
                assert message in ended.error_message, (case, ended.error_message)
                assert ended.end_reason == common_pb2.END_REASON_FAILED
            oom = await engine.ended("fail-oom")
            assert oom.algorithm_outcome.oom_killed and oom.algorithm_outcome.exit_code == 137
            deadline = await engine.ended("fail-deadline")
            assert (deadline.status, deadline.error_code) == (41, "algorithm_timed_out")
            assert deadline.end_reason == common_pb2.END_REASON_TIMED_OUT
            try:
                await wait_until(lambda: not c.owned_by_jobs(), what="the jobs' objects removed")
            except AssertionError:
                raise AssertionError(f"left: {c.owned_by_jobs()}") from None


async def test_a_pod_no_node_can_take_fails_its_job_after_the_grace_unless_a_node_comes(
    data_dir, postgres_url, tmp_path
):
    # The node has 1 CPU, the algorithm pods ask for 2; the pod programs' 500m fit.
    with cluster(tmp_path, cpu="1") as c:
        grace_s = 5.0  # long enough for the second node to come up on a loaded machine
        async with k8s_engine(
            c, postgres_url, tmp_path / "ws", cpu_cores=2, k8s_unschedulable_grace_s=grace_s
        ) as engine:
            mark = c.api.mark()
            await engine.submit(workflow("print('hi')", max_duration_s=60), job_id="big")
            ended = await engine.ended("big")
            assert (ended.status, ended.error_code, ended.end_reason) == (
                41,
                "algorithm_failed",
                common_pb2.END_REASON_FAILED,
            )
            assert ended.error_message == (
                "algorithm pod cannot be scheduled: 0/1 nodes are available: 1 Insufficient cpu."
            ), ended
            changes = await engine.history("big")
            waited_s = changes[-1].time.ToDatetime() - next(ch for ch in changes if ch.status == 40).time.ToDatetime()
            assert grace_s <= waited_s.total_seconds() < 60  # the grace, not the algorithm's 60 s
            # Its pod was deleted as the stage ended (it must not start once the job moved on).
            deletes = [call.name for call in c.api.calls(mark, user_agent=USER_AGENT) if call.verb == "delete"]
            assert f"{object_name('big')}-algorithm" in deletes
            await wait_until(lambda: not c.owned_by_jobs(), what="the job's objects removed")

            # A node joins (as an autoscaler adds one) within the grace: the job runs.
            await engine.submit(workflow("print('on the new node')"), job_id="scaled")
            await wait_until(
                lambda: "Insufficient cpu" in c.pod_scheduled(f"{object_name('scaled')}-algorithm"),
                what="the algorithm pod unschedulable",
            )
            # (its root is the first node's: the job's volume, on network storage, follows the pod)
            with kube.Kubelet(c.api, tmp_path / "node", node_name="added-node", cpu="4"):
                ended = await engine.ended("scaled")
                assert ended.status == 70, ended
                assert "on the new node" in engine.algorithm_log("scaled").read_text()
                await wait_until(lambda: not c.owned_by_jobs(), what="the job's objects removed")


async def test_a_node_selector_no_node_matches_fails_the_configure_stage_fast(data_dir, postgres_url, tmp_path):
    with cluster(tmp_path) as c:
        settings = {"k8s_node_selector": '{"c2d.dev/pool": "jobs"}', "k8s_unschedulable_grace_s": 0.5}
        async with k8s_engine(c, postgres_url, tmp_path / "ws", configure_timeout_s=60, **settings) as engine:
            ended = await engine.ended(await engine.submit(workflow("print('hi')")))
            assert (ended.status, ended.error_code, ended.end_reason) == (
                31,
                "configure_crashed",
                common_pb2.END_REASON_FAILED,
            )
            assert ended.error_message == (
                "configure pod cannot be scheduled: 0/1 nodes are available: "
                "1 node(s) didn't match Pod's node affinity/selector."
            )
            await wait_until(lambda: not c.owned_by_jobs(), what="the job's objects removed")


async def test_a_stop_in_each_stage_deletes_its_pod_and_ends_the_job_stopped(data_dir, postgres_url, tmp_path):
    stages = {"configure": 20, "algorithm": 40, "publish": 60}
    with cluster(tmp_path) as c:
        for stage in stages:
            plan_for(c, f"stop-{stage}", stage, kube.Hang())
        async with k8s_engine(c, postgres_url, tmp_path / "ws", max_jobs=4) as engine:
            for stage in stages:
                await engine.submit(workflow("print('hi')"), job_id=f"stop-{stage}")
            for stage, status in stages.items():
                job_id = f"stop-{stage}"
                await engine.reached(job_id, status)
                await wait_until(
                    lambda job_id=job_id, stage=stage: c.pod_phase(f"{object_name(job_id)}-{stage}") == "Running",
                    what=f"the {stage} pod running",
                )
                mark = c.api.mark()
                await engine.stop(job_id)
                ended = await engine.ended(job_id)
                assert (ended.status, ended.end_reason) == (70, common_pb2.END_REASON_STOPPED)
                deletes = [call.name for call in c.api.calls(mark, user_agent=USER_AGENT) if call.verb == "delete"]
                assert f"{object_name(job_id)}-{stage}" in deletes
            try:
                await wait_until(lambda: not c.owned_by_jobs(), what="the jobs' objects removed")
            except AssertionError:
                raise AssertionError(f"left: {c.owned_by_jobs()}") from None


async def test_a_watch_that_gets_410_gone_lists_again_and_misses_nothing(data_dir, postgres_url, tmp_path):
    with cluster(tmp_path) as c:
        async with k8s_engine(c, postgres_url, tmp_path / "ws") as engine:
            job_id = await engine.submit(workflow(gate() + "print('released')\n"), job_id="gone")
            await engine.reached(job_id, 40)
            lists = lambda: count(c.api.calls(user_agent=USER_AGENT))["list", "pods"]  # noqa: E731
            assert lists() == 1
            c.api.expire_watches()
            await wait_until(lambda: lists() == 2, what="the pod list after 410 Gone")
            release(c.kubelet.claim_path(NAMESPACE, object_name(job_id)))
            ended = await engine.ended(job_id)
            assert ended.status == 70, ended
            assert "released" in engine.algorithm_log(job_id).read_text()


async def test_the_demo_job_reaches_70_through_the_provider_on_kubernetes(data_dir, postgres_url, tmp_path):
    with cluster(tmp_path) as c:
        stacks = running_stack(postgres_url, **engine_settings(c))
        async with contextlib.aclosing(stacks):  # the engine stops before the cluster, even on a failure
            stack = await anext(stacks)
            await wait_for_environment(stack.provider_address)
            outcome = await demo.run_demo(stack.provider_address, tmp_path / "out", say=lambda *_: None)
            assert outcome["ok"], outcome
            assert outcome["statuses"][-1] == 70 and outcome["result"] == demo.EXPECTED
            # The algorithm's log, copied from its pod, is among the results.
            assert Path(outcome["log"]).read_text() == "processed 4 rows\n"
            # kubectl get computejobs -w: the job's statuses as it went, ending with its end.
            # (the last one is written as the job's objects are released, after the consumer saw 70)
            await wait_until(lambda: [s["status"] for s in status_patches(c)][-1:] == [70], what="status 70 shown")
            shown = status_patches(c)
            assert shown[-1] == {
                "status": 70,
                "statusText": "Job finished",
                "stage": "done",
                "endReason": "Completed",
                "errorCode": "",
                "message": "",
            }
            assert {s["stage"] for s in shown[:-1]} <= {"configure", "algorithm", "publish"}
            schemas = manifests.custom_schemas()
            for status in shown:
                manifests.validate({**compute_job("x"), "status": status}, schemas)
            await wait_until(lambda: not c.owned_by_jobs(), what="the job's objects removed")


@pytest.mark.parametrize(
    ("settings", "rbac", "message"),
    [
        ({"gpus": 1}, True, "asks for 1 GPU(s) per job but no node of the cluster offers that many nvidia.com/gpu"),
        ({"k8s_storage_class": "fast-ssd"}, True, "storage class 'fast-ssd' does not exist on the cluster"),
        ({"k8s_storage_class": ""}, False, "the engine cannot create objects in namespace 'c2d' (403"),
        ({}, False, "the engine may not read storage class 'standard' (403"),
        ({"k8s_namespace": "elsewhere"}, True, "the engine cannot create objects in namespace 'elsewhere'"),
        ({"k8s_node_selector": "gpu"}, True, "C2D_ENGINE_K8S_NODE_SELECTOR='gpu' is not JSON"),
    ],
)
async def test_an_engine_the_cluster_cannot_serve_refuses_to_start(
    data_dir, postgres_url, tmp_path, settings, rbac, message
):
    with cluster(tmp_path, rbac=rbac) as c:
        with pytest.raises(ClusterUnfit) as refused:
            async with k8s_engine(c, postgres_url, tmp_path / "ws", **settings):
                pass
        assert message in str(refused.value)
        assert not c.owned_by_jobs()


async def test_an_invalid_image_reference_is_refused_at_submit(data_dir, postgres_url, tmp_path):
    with cluster(tmp_path) as c:
        async with k8s_engine(c, postgres_url, tmp_path / "ws") as engine:
            for image, field in (("Not/Valid", "image"), ("python@sha256:nothex", "image")):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await engine.submit(workflow("print(1)", image=image))
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "cannot run on Kubernetes" in str(refused.value.details())
                assert bad_request_fields(refused.value) == [f"workflow.container.{field}"]
            assert not c.owned_by_jobs()


async def test_a_restarted_engine_follows_surviving_pods_fails_lost_ones_and_deletes_orphans(
    data_dir, postgres_url, tmp_path
):
    with cluster(tmp_path) as c:
        core = kubernetes.client.CoreV1Api(c.api.api_client())
        async with k8s_engine(c, postgres_url, tmp_path / "ws") as engine:
            for job_id in ("survive", "vanish"):
                await engine.submit(workflow(gate() + "print('after the restart')\n"), job_id=job_id)
            for job_id in ("survive", "vanish"):
                await engine.reached(job_id, 40)
                # 40 is reported before the pod is created: leaving now could stop its creation.
                algorithm_pod = f"{object_name(job_id)}-algorithm"
                await wait_until(
                    lambda name=algorithm_pod: c.pod_phase(name) == "Running", what=f"{algorithm_pod} running"
                )
        # The engine is gone; its algorithm pods run on. Meanwhile one of them is deleted,
        # and a pod of a job no engine knows appears.
        assert c.pod_phase(f"{object_name('survive')}-algorithm") == "Running"
        core.delete_namespaced_pod(f"{object_name('vanish')}-algorithm", NAMESPACE, grace_period_seconds=0)
        c.kubelet.plan(kube.Hang(), name=f"{object_name('stranger')}-algorithm")
        orphan_job = compute_job(object_name("stranger"), "stranger")
        orphan_job["metadata"]["namespace"] = NAMESPACE
        (owner,) = c.api.apply([orphan_job])
        stranger = pod(f"{object_name('stranger')}-algorithm", ["sleep", "60"], labels=dict(orphan_labels("stranger")))
        stranger["metadata"] |= {
            "namespace": NAMESPACE,
            "annotations": {JOB_ID_ANNOTATION: "stranger"},
            "ownerReferences": [owner_reference(owner)],
        }
        c.api.apply([stranger])
        await wait_until(lambda: c.pod_phase(f"{object_name('vanish')}-algorithm") == "", what="the pod deleted")

        async with k8s_engine(c, postgres_url, tmp_path / "ws") as engine:
            await wait_until(
                lambda: not any("stranger" in name for name in c.owned_by_jobs()), what="the orphan deleted"
            )
            vanished = await engine.ended("vanish")
            assert (vanished.status, vanished.error_code) == (41, "engine_restarted")
            assert vanished.error_message == "engine restarted during algorithm"
            release(c.kubelet.claim_path(NAMESPACE, object_name("survive")))
            survived = await engine.ended("survive")
            assert survived.status == 70, survived
            statuses = [ch.status for ch in await engine.history("survive")]
            assert statuses == [10, 20, 30, 40, 60, 70]  # the algorithm was followed, not run again
            assert "after the restart" in engine.algorithm_log("survive").read_text()
            await wait_until(lambda: not c.owned_by_jobs(), what="every job's objects removed")
            # The engine's Role grants what it used here, no more (computejobs/finalizers: for the
            # admission plugin that checks blockOwnerDeletion, which the emulator does not run).
            calls = c.api.calls(user_agent=USER_AGENT)
            namespaced = {(call.group, call.resource, call.verb) for call in calls if call.namespace}
            assert namespaced | {("c2d.dev", "computejobs/finalizers", "update")} == ENGINE_CALLS


def leave_objects(c, bodies: list[dict], job_id: str, as_job: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Creates a job's ComputeJob and what it owns again (`bodies`, as the engine created
    them for `job_id`), for `as_job`: what an engine that died mid-way leaves; kind/name."""
    text = json.dumps(bodies).replace(object_name(job_id), object_name(as_job)).replace(job_id, as_job)
    owner_body, *owned = json.loads(text)
    schemas = manifests.custom_schemas()
    manifests.validate(owner_body, schemas)
    (owner,) = c.api.apply([owner_body])
    for body in owned:
        body["metadata"]["ownerReferences"] = [owner_reference(owner)]
        manifests.validate(body, schemas)
    c.api.apply(owned)
    return [f"{body['kind']}/{body['metadata']['name']}" for body in [owner_body, *owned]]


async def test_a_restarted_engine_deletes_computejobs_of_jobs_it_does_not_hold_and_resumes_its_own(
    data_dir, postgres_url, tmp_path
):
    with cluster(tmp_path) as c:
        core = kubernetes.client.CoreV1Api(c.api.api_client())
        plan_for(c, "resumed", "configure", kube.Hang())
        async with k8s_engine(c, postgres_url, tmp_path / "ws") as engine:
            assert (await engine.ended(await engine.submit(workflow("print(1)"), job_id="left-done"))).status == 70
            await engine.submit(workflow("print('resumed')"), job_id="resumed")
            await engine.reached("resumed", 20)
            configure_pod = f"{object_name('resumed')}-configure"
            await wait_until(lambda: c.pod_phase(configure_pod) == "Running", what="the configure pod running")
        made = [
            body
            for body in created_objects(c)
            if body["metadata"].get("annotations", {}).get(JOB_ID_ANNOTATION) == "left-done" and body["kind"] != "Pod"
        ]
        assert sorted(body["kind"] for body in made) == [
            "ComputeJob",
            "NetworkPolicy",
            "PersistentVolumeClaim",
            "Secret",
        ]
        assert made[0]["kind"] == "ComputeJob"  # created first: the others name it as their owner
        # The engine is gone. Engines that died mid-way left: the ComputeJob (with its claim,
        # Secret and policy) of a job that ended (died after deleting its pods) and of a job
        # no engine holds (died before its first pod); a running job's ComputeJob without pods.
        left = leave_objects(c, made, "left-done", "left-done") + leave_objects(c, made, "left-done", "left-ghost")
        core.delete_namespaced_pod(configure_pod, NAMESPACE, grace_period_seconds=0)
        await wait_until(lambda: c.pod_phase(configure_pod) == "", what="the configure pod deleted")
        assert set(left) <= set(c.owned_by_jobs())
        c.kubelet.forget_plans()

        async with k8s_engine(c, postgres_url, tmp_path / "ws") as engine:
            try:
                await wait_until(lambda: not set(left) & set(c.owned_by_jobs()), what="the orphans deleted")
            except AssertionError:
                raise AssertionError(f"left: {c.owned_by_jobs()}") from None
            resumed = await engine.ended("resumed")
            assert resumed.status == 70, resumed
            assert "resumed" in engine.algorithm_log("resumed").read_text()
            await wait_until(lambda: not c.owned_by_jobs(), what="every job's objects removed")


async def test_stream_job_logs_follows_the_algorithm_pod_while_it_runs(data_dir, postgres_url, tmp_path):
    code = "import sys\nprint('first line', flush=True)\n" + gate() + "print('last line')\n"
    with cluster(tmp_path) as c:
        async with k8s_engine(c, postgres_url, tmp_path / "ws") as engine:
            job_id = await engine.submit(workflow(code), job_id="follow")
            await engine.reached(job_id, 40)
            call = engine.stub.StreamJobLogs(
                engine_pb2.StreamJobLogsRequest(job_id=job_id, follow=True), metadata=engine.metadata
            )
            received = b""
            async for chunk in call:
                received += chunk.data
                if b"first line" in received:
                    break
            assert received.startswith(b"first line")  # while the pod runs, before its end
            assert (await engine.history(job_id, lambda ch: ch.status == 40))[-1].status == 40
            release(c.kubelet.claim_path(NAMESPACE, object_name(job_id)))
            async for chunk in call:
                received += chunk.data
            assert received == b"first line\nlast line\n"
            assert (await engine.ended(job_id)).status == 70


async def test_a_link_the_algorithm_plants_as_its_log_is_replaced_not_followed(data_dir, postgres_url, tmp_path):
    # The algorithm may write /data/logs; pod_publish later writes the engine's copy of the
    # log there with the whole volume mounted. A link must not carry that write elsewhere.
    code = (
        "import os\nprint('the real log', flush=True)\n"
        "os.symlink('/data/outputs/planted.txt', '/data/logs/algorithm.log')\n"
    )
    with cluster(tmp_path) as c:
        async with k8s_engine(c, postgres_url, tmp_path / "ws") as engine:
            job_id = await engine.submit(workflow(code), job_id="planted")
            ended = await engine.ended(job_id)
            assert ended.status == 70, ended
            paths = [f.path for f in ended.results.files]
            assert "planted.txt" not in paths
            assert not (c.kubelet.claim_path(NAMESPACE, object_name(job_id)) / "outputs" / "planted.txt").exists()
            log = c.kubelet.claim_path(NAMESPACE, object_name(job_id)) / "logs" / "algorithm.log"
            assert not log.is_symlink() and log.read_text() == "the real log\n"
            assert "algorithm.log" in paths


async def test_more_running_algorithms_than_the_loops_default_threads_do_not_starve_the_engine(
    data_dir, postgres_url, tmp_path
):
    # Each running algorithm's log is followed by a thread for as long as it runs: more of
    # them than asyncio's default pool holds (cores + 4) must leave the engine's calls free.
    jobs = [f"many-{n}" for n in range((os.cpu_count() or 1) + 6)]
    with cluster(tmp_path) as c:
        async with k8s_engine(c, postgres_url, tmp_path / "ws", max_jobs=len(jobs)) as engine:
            for job_id in jobs:
                await engine.submit(workflow(gate() + "print('done')\n"), job_id=job_id)
            await wait_until(
                lambda: all(c.pod_phase(f"{object_name(j)}-algorithm") == "Running" for j in jobs),
                what="every algorithm pod running at once",
            )
            for job_id in jobs:
                release(c.kubelet.claim_path(NAMESPACE, object_name(job_id)))
            for job_id in jobs:
                assert (await engine.ended(job_id)).status == 70
