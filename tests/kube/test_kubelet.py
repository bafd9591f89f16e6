"""The test kubelet: real local processes for pods, and each failure a node reports."""

from __future__ import annotations

import time

import kubernetes.client
import pytest
from kubernetes.client.rest import ApiException

from testkit import kube

from .helpers import container_state, finished, phase, pod, wait_for_pod, waiting_reason

NS = "c2d"
CLAIM = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}


def terminated(pod_: dict) -> dict:
    return container_state(pod_).get("terminated") or {}


def test_a_trivial_pod_runs_to_succeeded_and_its_log_is_readable(api, core, kubelet):
    core.create_namespaced_pod(NS, pod("hello", ["sh", "-c", "echo hi"]))

    seen = wait_for_pod(core, "hello", finished)

    end = seen[-1][1]
    assert [phase(p) for _, p in seen if phase(p)][-3:] == ["Pending", "Running", "Succeeded"]
    assert terminated(end)["exitCode"] == 0 and terminated(end)["reason"] == "Completed"
    assert end["spec"]["nodeName"] == "testkit-node"
    assert core.read_namespaced_pod_log("hello", NS) == "hi\n"
    node = core.read_node("testkit-node")
    assert node.status.allocatable["cpu"] == "2" and node.status.conditions[0].type == "Ready"


def test_the_volume_claim_is_a_directory_with_sub_paths_and_read_only_mounts(core, kubelet):
    core.create_namespaced_persistent_volume_claim(NS, {"metadata": {"name": "work"}, "spec": CLAIM})
    inputs = kubelet.claim_path(NS, "work") / "inputs"
    inputs.mkdir()
    (inputs / "0").write_text("data\n")
    script = 'cp /data/inputs/0 /data/outputs/copy; echo more > /data/inputs/1 || echo "inputs are read-only"'
    mounts = [
        {"name": "work", "mountPath": "/data/inputs", "subPath": "inputs", "readOnly": True},
        {"name": "work", "mountPath": "/data/outputs", "subPath": "outputs"},
    ]
    spec = {"volumes": [{"name": "work", "persistentVolumeClaim": {"claimName": "work"}}]}
    core.create_namespaced_pod(NS, pod("copy", ["sh", "-c", script], container={"volumeMounts": mounts}, **spec))

    end = wait_for_pod(core, "copy", finished)[-1][1]

    assert phase(end) == "Succeeded"
    assert (kubelet.claim_path(NS, "work") / "outputs" / "copy").read_text() == "data\n"
    assert not (inputs / "1").exists()
    assert "inputs are read-only" in core.read_namespaced_pod_log("copy", NS)
    assert core.read_namespaced_persistent_volume_claim("work", NS).status.phase == "Bound"


def test_environment_secrets_and_references(core, kubelet):
    core.create_namespaced_secret(NS, {"metadata": {"name": "job-token"}, "stringData": {"token": "t0k3n"}})
    env = [
        {"name": "GREETING", "value": "hello"},
        {"name": "MESSAGE", "value": "$(GREETING) world"},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "job-token", "key": "token"}}},
    ]
    container = {
        "env": env,
        "args": ["$(MESSAGE)"],
        "volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets/c2d", "readOnly": True}],
    }
    script = 'echo "$1|$POD|$FROM_SECRET|$(cat /var/run/secrets/c2d/token)|${C2D_LEAK:-clean}"'
    volumes = [{"name": "token", "secret": {"secretName": "job-token", "defaultMode": 0o400}}]
    core.create_namespaced_pod(NS, pod("env", ["sh", "-c", script, "sh"], container=container, volumes=volumes))

    end = wait_for_pod(core, "env", finished)[-1][1]

    assert phase(end) == "Succeeded"
    assert core.read_namespaced_pod_log("env", NS) == "hello world|env|t0k3n|t0k3n|clean\n"


def test_a_failing_program_fails_the_pod_with_its_exit_code_and_message(core, kubelet):
    container = {"terminationMessagePolicy": "FallbackToLogsOnError"}
    core.create_namespaced_pod(NS, pod("fail", ["sh", "-c", "echo bad input >&2; exit 3"], container=container))

    end = wait_for_pod(core, "fail", finished)[-1][1]

    assert phase(end) == "Failed"
    assert terminated(end)["exitCode"] == 3 and terminated(end)["reason"] == "Error"
    assert terminated(end)["message"] == "bad input"


def test_a_termination_message_file_is_reported(core, kubelet):
    core.create_namespaced_pod(NS, pod("msg", ["sh", "-c", "echo stage_failed > /dev/termination-log; exit 1"]))

    end = wait_for_pod(core, "msg", finished)[-1][1]

    assert terminated(end)["message"] == "stage_failed\n"


@pytest.mark.parametrize("program", ["pod_config", "pod_publish"])
def test_the_pod_program_images_run_the_real_programs(core, kubelet, program):
    image = f"ghcr.io/c2d/{program.replace('_', '-')}:dev"
    core.create_namespaced_pod(NS, pod("stage", None, image=image))

    end = wait_for_pod(core, "stage", finished, timeout=60)[-1][1]

    assert terminated(end)["exitCode"] == 2  # it starts, and finds no job in its environment
    assert f"{program}: environment variable 'C2D_JOB_ID' is required" in core.read_namespaced_pod_log("stage", NS)


def test_a_missing_secret_key_and_an_invalid_image_never_start(core, kubelet):
    reference = {"valueFrom": {"secretKeyRef": {"name": "absent", "key": "token"}}}
    core.create_namespaced_pod(NS, pod("no-secret", ["true"], container={"env": [{"name": "T", **reference}]}))
    core.create_namespaced_pod(NS, pod("bad-image", ["true"], image="Not A/Valid:Image"))

    no_secret = wait_for_pod(core, "no-secret", lambda _, p: waiting_reason(p) == "CreateContainerConfigError")[-1][1]
    bad_image = wait_for_pod(core, "bad-image", lambda _, p: waiting_reason(p) == "InvalidImageName")[-1][1]

    assert (
        phase(no_secret) == "Pending"
        and container_state(no_secret)["waiting"]["message"] == 'secret "absent" not found'
    )
    assert phase(bad_image) == "Pending"


def test_deadline_exceeded_kills_a_real_process(core, kubelet):
    core.create_namespaced_pod(NS, pod("slow", ["sleep", "30"], activeDeadlineSeconds=1))
    started = time.monotonic()

    end = wait_for_pod(core, "slow", finished)[-1][1]

    assert time.monotonic() - started < 10
    assert phase(end) == "Failed" and end["status"]["reason"] == "DeadlineExceeded"
    assert terminated(end)["exitCode"] == 137


def test_deleting_a_running_pod_stops_its_process_then_removes_it(core, kubelet):
    core.create_namespaced_persistent_volume_claim(NS, {"metadata": {"name": "beat"}, "spec": CLAIM})
    beat = "while true; do date +%s%N > /beat/now; sleep 0.05; done"
    mounts = [{"name": "beat", "mountPath": "/beat"}]
    volumes = [{"name": "beat", "persistentVolumeClaim": {"claimName": "beat"}}]
    core.create_namespaced_pod(NS, pod("loop", ["sh", "-c", beat], container={"volumeMounts": mounts}, volumes=volumes))
    wait_for_pod(core, "loop", lambda _, p: phase(p) == "Running")
    heartbeat = kubelet.claim_path(NS, "beat") / "now"
    deadline = time.monotonic() + 10
    while not heartbeat.exists() and time.monotonic() < deadline:
        time.sleep(0.02)  # Running means started, not yet beating

    marked = core.delete_namespaced_pod("loop", NS)
    seen = wait_for_pod(core, "loop", lambda type_, _: type_ == "DELETED", since=marked.metadata.resource_version)

    last_state = next(p for type_, p in reversed(seen) if type_ == "MODIFIED" and terminated(p))
    assert terminated(last_state)["exitCode"] == 143 and phase(last_state) == "Failed"
    stopped_at = heartbeat.read_text()
    time.sleep(0.3)
    assert heartbeat.read_text() == stopped_at
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_pod_log("loop", NS)
    assert gone.value.status == 404


@pytest.mark.parametrize(
    ("scenario", "exit_code", "reason"),
    [
        (kube.Exit(4, log="simulated\n"), 4, "Error"),
        (kube.OOMKilled(), 137, "OOMKilled"),
        (kube.Exit(0), 0, "Completed"),
    ],
)
def test_planned_endings(core, kubelet, scenario, exit_code, reason):
    kubelet.plan(scenario, labels={"stage": "algorithm"})
    core.create_namespaced_pod(NS, pod("algo", ["never-run"], labels={"stage": "algorithm"}))

    end = wait_for_pod(core, "algo", finished)[-1][1]

    assert terminated(end)["exitCode"] == exit_code and terminated(end)["reason"] == reason
    assert phase(end) == ("Succeeded" if exit_code == 0 else "Failed")


def test_plans_pick_pods_by_name_and_the_first_match_wins(core, kubelet):
    kubelet.plan(kube.Exit(7), name="job-*-algorithm")
    kubelet.plan(kube.Exit(9))
    core.create_namespaced_pod(NS, pod("job-1-algorithm", ["true"]))
    core.create_namespaced_pod(NS, pod("job-1-configure", ["true"]))

    assert terminated(wait_for_pod(core, "job-1-algorithm", finished)[-1][1])["exitCode"] == 7
    assert terminated(wait_for_pod(core, "job-1-configure", finished)[-1][1])["exitCode"] == 9


def test_image_pull_failure_stays_pending_with_its_reasons(core, kubelet):
    kubelet.plan(kube.IMAGE_PULL_BACKOFF, name="pull")
    core.create_namespaced_pod(NS, pod("pull", ["true"], image="registry.invalid/none:1"))

    seen = wait_for_pod(core, "pull", lambda _, p: waiting_reason(p) == "ImagePullBackOff")

    reasons = [waiting_reason(p) for _, p in seen if waiting_reason(p)]
    assert reasons[-2:] == ["ErrImagePull", "ImagePullBackOff"] and phase(seen[-1][1]) == "Pending"
    marked = core.delete_namespaced_pod("pull", NS)
    wait_for_pod(core, "pull", lambda type_, _: type_ == "DELETED", since=marked.metadata.resource_version)


def test_a_hanging_pod_ends_at_its_deadline(core, kubelet):
    kubelet.plan(kube.Hang(), name="hang")
    core.create_namespaced_pod(NS, pod("hang", ["true"], activeDeadlineSeconds=1))

    end = wait_for_pod(core, "hang", finished)[-1][1]

    assert end["status"]["reason"] == "DeadlineExceeded"
    assert end["status"]["message"] == "Pod was active on the node longer than the specified deadline"


def test_a_lost_node_fails_the_pod_then_it_is_removed(core, kubelet):
    kubelet.plan(kube.NodeLost(after_s=0.2), name="lost")
    created = core.create_namespaced_pod(NS, pod("lost", ["true"]))

    seen = wait_for_pod(core, "lost", lambda type_, _: type_ == "DELETED", since=created.metadata.resource_version)

    failed = next(p for _, p in seen if phase(p) == "Failed")
    disruption = next(c for c in failed["status"]["conditions"] if c["type"] == "DisruptionTarget")
    assert disruption["reason"] == "DeletionByPodGC"
    assert "running" in container_state(failed)  # nobody was left to record the container's end


def test_a_pod_deleted_by_someone_mid_run(core, kubelet):
    kubelet.plan(kube.Deleted(after_s=0.2), name="evicted")
    created = core.create_namespaced_pod(NS, pod("evicted", ["true"]))

    seen = wait_for_pod(core, "evicted", lambda type_, _: type_ == "DELETED", since=created.metadata.resource_version)

    marked = next(p for _, p in seen if p["metadata"].get("deletionTimestamp"))
    assert phase(marked) == "Running"
    assert terminated(seen[-1][1])["exitCode"] == 143


def unschedulable(message: str):
    def check(_: str, p: dict) -> bool:
        conditions = (p.get("status") or {}).get("conditions") or []
        return any(
            c["type"] == "PodScheduled" and c["status"] == "False" and message in c["message"] for c in conditions
        )

    return check


def test_unschedulable_pods_wait_for_what_they_lack(api, core, kubelet, tmp_path):
    gpu = {"resources": {"limits": {"nvidia.com/gpu": "1"}}}
    core.create_namespaced_pod(NS, pod("gpu", ["true"], container=gpu))
    volumes = [{"name": "later", "persistentVolumeClaim": {"claimName": "later"}}]
    core.create_namespaced_pod(NS, pod("claim", ["true"], volumes=volumes))

    wait_for_pod(core, "gpu", unschedulable("Insufficient nvidia.com/gpu"))
    wait_for_pod(core, "claim", unschedulable('persistentvolumeclaim "later" not found'))
    core.create_namespaced_persistent_volume_claim(NS, {"metadata": {"name": "later"}, "spec": CLAIM})
    assert phase(wait_for_pod(core, "claim", finished)[-1][1]) == "Succeeded"
    core.delete_namespaced_pod("gpu", NS)

    with kube.Kubelet(api, tmp_path / "gpu-node", node_name="gpu-node", gpus=1):
        core.create_namespaced_pod(NS, pod("gpu-2", ["true"], container=gpu))
        end = wait_for_pod(core, "gpu-2", finished)[-1][1]
    assert end["spec"]["nodeName"] == "gpu-node" and phase(end) == "Succeeded"
    nodes = kubernetes.client.CoreV1Api(api.api_client()).list_node().items
    assert {n.metadata.name: n.status.capacity.get("nvidia.com/gpu") for n in nodes} == {
        "testkit-node": None,
        "gpu-node": "1",
    }


def test_pods_asking_more_than_the_node_has_or_for_another_node_are_not_scheduled(api, core, tmp_path):
    with kube.Kubelet(api, tmp_path / "node", cpu="2", memory="4Gi", labels={"c2d.dev/pool": "jobs"}) as node:
        node.plan(kube.Unschedulable("0/1 nodes are available: waiting for a node", for_s=0.5), name="scaled")
        asks = {
            "cpu": ({"cpu": "2500m"}, {}, "1 Insufficient cpu."),
            "memory": ({"memory": "5Gi"}, {}, "1 Insufficient memory."),
            "elsewhere": ({}, {"c2d.dev/pool": "gpu"}, "1 node(s) didn't match Pod's node affinity/selector."),
        }
        for name, (requests, selector, _) in asks.items():
            spec = {"container": {"resources": {"requests": requests}}, "nodeSelector": selector}
            core.create_namespaced_pod(NS, pod(name, ["true"], **spec))
        fits = {"resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}
        core.create_namespaced_pod(NS, pod("fits", ["true"], container=fits, nodeSelector={"c2d.dev/pool": "jobs"}))
        core.create_namespaced_pod(NS, pod("scaled", ["true"]))

        for name, (_, _, message) in asks.items():
            seen = wait_for_pod(core, name, unschedulable("0/1 nodes are available: " + message))
            assert phase(seen[-1][1]) == "Pending" and not seen[-1][1]["spec"].get("nodeName")
        assert phase(wait_for_pod(core, "fits", finished)[-1][1]) == "Succeeded"
        # Unschedulable for a while, then a node (an autoscaler's) takes it.
        seen = wait_for_pod(core, "scaled", finished)
        assert any(unschedulable("waiting for a node")(*event) for event in seen)
        assert phase(seen[-1][1]) == "Succeeded"
        for name in asks:
            core.delete_namespaced_pod(name, NS)


def test_the_kubelet_recovers_from_410_on_its_watch(api, core, kubelet):
    api.expire_watches()
    core.create_namespaced_pod(NS, pod("after-410", ["true"]))

    assert phase(wait_for_pod(core, "after-410", finished)[-1][1]) == "Succeeded"
    lists = [c for c in api.calls(user_agent="testkit-kubelet") if c.verb == "list" and c.resource == "pods"]
    assert len(lists) == 2
