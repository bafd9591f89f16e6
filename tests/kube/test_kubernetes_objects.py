"""The objects the kubernetes backend creates for a job, field by field, and
each valid for Kubernetes 1.30 (kubernetes-validate --strict)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.operator_engine.backends.kubernetes import objects
from services.operator_engine.backends.kubernetes.objects import ClusterConfig, ImageRefused, JobObjects
from services.operator_engine.domain.jobs import Capacity, JobSpec
from testkit.kube import manifests

TOKEN = "job-token-that-must-stay-in-its-secret"
DIGEST = "sha256:" + "ab" * 32
OWNER = {"metadata": {"name": "c2d-job-1-abc", "uid": "0b2a0c7e-0000-4000-8000-000000000001"}}
CAPACITY = Capacity(cpu_cores=1.5, memory_bytes=1 << 30, disk_bytes=2 << 30, log_max_bytes=1 << 20)
BLOCKED = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "fd00:ec2::254/128")


def config(**changes) -> ClusterConfig:  # type: ignore[no-untyped-def]
    return ClusterConfig(
        namespace="c2d",
        engine_id="engine-1",
        agent_address="c2d-operator-engine:50053",
        pod_config_image="c2d-pod-config:dev",
        pod_publish_image="c2d-pod-publish:dev",
        blocked_cidrs=BLOCKED,
        pod_environment={"C2D_STORAGE_KIND": "local", "C2D_STORAGE_S3_SECRET_KEY": "s3-secret-value"},
        **changes,
    )


def job(**changes) -> JobSpec:  # type: ignore[no-untyped-def]
    fields = {
        "job_id": "Job_1",
        "environment_id": "env",
        "token": TOKEN,
        "workspace": Path("/nonexistent"),
        "entrypoint": "python3 $ALGO --fast",
        "image": "docker.io/library/python",
        "image_tag": "3.12",
        "allow_network": False,
        "algorithm_timeout_s": 90.5,
        "dataset_dids": ("did:op:" + "cd" * 32,),
        "algorithm_did": "did:op:" + "ef" * 32,
    }
    return JobSpec(**{**fields, **changes})


def every_object(c: ClusterConfig, j: JobSpec) -> list[dict]:
    o = JobObjects(c, j)
    return [
        o.compute_job(),
        o.volume_claim(OWNER, 2 << 30),
        o.secret(OWNER),
        o.algorithm_policy(OWNER),
        o.pod_program(OWNER, "configure", 600),
        o.algorithm_pod(OWNER, CAPACITY),
        o.pod_program(OWNER, "publish", 600),
        objects.pod_programs_policy(c),
    ]


@pytest.mark.parametrize("network", [False, True])
def test_every_object_is_valid_for_kubernetes_1_30(network):
    schemas = manifests.custom_schemas()
    c = config(
        gpus=2,
        node_selector={"pool": "jobs"},
        tolerations=({"key": "gpu", "operator": "Exists", "effect": "NoSchedule"},),
        image_pull_secrets=("regcred",),
        storage_class="standard",
    )
    for obj in every_object(c, job(allow_network=network)):
        manifests.validate(obj, schemas)


def test_the_algorithm_pod_is_locked_down_field_by_field():
    pod = JobObjects(config(gpus=1), job(image_checksum=DIGEST)).algorithm_pod(OWNER, CAPACITY)
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert container["image"] == f"docker.io/library/python@{DIGEST}"  # the digest wins over the tag
    assert container["command"] == ["python3", "/data/transformations/algorithm", "--fast"]
    assert {e["name"]: e["value"] for e in container["env"]} == {
        "DIDS": '["' + "cd" * 32 + '"]',
        "TRANSFORMATION_DID": "ef" * 32,
        "VOLUME": "/data",
        "INPUTS": "/data/inputs",
        "OUTPUTS": "/data/outputs",
        "LOGS": "/data/logs",
    }
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    assert spec["serviceAccountName"] == "c2d-job" and spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 91
    assert (
        container["resources"]["requests"]
        == container["resources"]["limits"]
        == {
            "cpu": "1500m",
            "memory": str(1 << 30),
            "nvidia.com/gpu": "1",
        }
    )
    mounts = {m["mountPath"]: (m.get("subPath"), m.get("readOnly", False)) for m in container["volumeMounts"]}
    assert mounts == {
        "/data/inputs": ("inputs", True),
        "/data/transformations": ("transformations", True),
        "/data/ddos": ("ddos", True),
        "/data/outputs": ("outputs", False),
        "/data/logs": ("logs", False),
        "/tmp": (None, False),
    }
    assert [v["name"] for v in spec["volumes"]] == ["data", "scratch"]  # no token, no Secret of any kind
    assert TOKEN not in repr(pod)
    # The engine's ingress policy admits c2d's own pods: the algorithm is not one of them.
    assert "app.kubernetes.io/part-of" not in pod["metadata"]["labels"]
    term = spec["affinity"]["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term == {
        "labelSelector": {"matchLabels": {"c2d.dev/job": JobObjects(config(), job()).name}},
        "topologyKey": "kubernetes.io/hostname",
    }
    assert pod["metadata"]["ownerReferences"][0]["uid"] == OWNER["metadata"]["uid"]


def test_without_gpus_or_digest_the_pod_asks_for_none_and_runs_the_tag():
    pod = JobObjects(config(), job()).algorithm_pod(OWNER, CAPACITY)
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "docker.io/library/python:3.12"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]


@pytest.mark.parametrize("stage", ["configure", "publish"])
def test_pod_programs_get_the_token_as_a_read_only_file_never_as_a_variable(stage):
    pod = JobObjects(config(), job()).pod_program(OWNER, stage, 600.2)
    spec = pod["spec"]
    (container,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert TOKEN not in repr(pod) and "C2D_JOB_TOKEN" not in env
    assert env["C2D_JOB_TOKEN_FILE"] == "/var/run/c2d/token"
    assert env["C2D_STORAGE_KIND"] == "local" and env["C2D_AGENT_ADDRESS"] == "c2d-operator-engine:50053"
    token_volume = next(v for v in spec["volumes"] if v["name"] == "token")
    assert token_volume["secret"] == {
        "secretName": JobObjects(config(), job()).name,
        "items": [{"key": "token", "path": "token"}],
        "defaultMode": 0o440,
    }
    mount = next(m for m in container["volumeMounts"] if m["name"] == "token")
    assert mount == {"name": "token", "mountPath": "/var/run/c2d", "readOnly": True}
    assert container["securityContext"] == objects.container_security()
    assert spec["activeDeadlineSeconds"] == 601
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/part-of"] == "c2d"


def test_the_algorithm_policy_denies_all_traffic_without_network_access():
    policy = JobObjects(config(), job()).algorithm_policy(OWNER)
    assert policy["spec"] == {
        "podSelector": {"matchLabels": {"c2d.dev/job": JobObjects(config(), job()).name, "c2d.dev/stage": "algorithm"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [],
        "egress": [],
    }


def test_a_network_allowed_algorithm_reaches_only_outside_the_cluster():
    egress = JobObjects(config(), job(allow_network=True)).algorithm_policy(OWNER)["spec"]["egress"]
    assert egress[0] == {
        "to": [
            {
                "ipBlock": {
                    "cidr": "0.0.0.0/0",
                    "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"],
                }
            },
            {"ipBlock": {"cidr": "::/0", "except": ["fd00:ec2::254/128", "fc00::/7", "fe80::/10"]}},
        ]
    }
    assert egress[1] == objects.dns_egress()


def test_pod_programs_reach_dns_the_engine_and_outside_only():
    policy = objects.pod_programs_policy(config())
    spec = policy["spec"]
    assert spec["podSelector"]["matchExpressions"] == [
        {"key": "c2d.dev/stage", "operator": "In", "values": ["configure", "publish"]}
    ]
    assert spec["policyTypes"] == ["Ingress", "Egress"] and spec["ingress"] == []
    dns, engine, outside = spec["egress"]
    assert dns == objects.dns_egress()
    assert engine == {
        "to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "c2d-operator-engine"}}}],
        "ports": [{"protocol": "TCP", "port": 50053}],
    }
    assert "169.254.0.0/16" in outside["to"][0]["ipBlock"]["except"]


@pytest.mark.parametrize(
    ("image", "tag", "checksum", "part"),
    [
        ("Python", "", "", "image"),
        ("py thon", "", "", "image"),
        ("python", "bad tag!", "", "tag"),
        ("python", "", "sha256:xyz", "checksum"),
        ("python", "", "md5:" + "a" * 32, "checksum"),
        ("", "", "", "image"),
    ],
)
def test_invalid_image_references_are_refused(image, tag, checksum, part):
    with pytest.raises(ImageRefused) as refused:
        objects.image_reference(image, tag, checksum)
    assert refused.value.part == part


def test_names_are_dns_labels_and_distinct_for_distinct_ids():
    names = {objects.object_name(job_id) for job_id in ("Job_1", "job-1", "JOB_1", "a" * 64)}
    assert len(names) == 4
    assert all(len(n) <= 63 and n == n.lower() and n[0].isalnum() for n in names)


@pytest.mark.parametrize("stage", ["configure", "publish"])
def test_credentials_the_pod_programs_inherit_come_from_the_job_secret(stage):
    o = JobObjects(config(), job())
    pod = o.pod_program(OWNER, stage, 600)
    assert "s3-secret-value" not in repr(pod)
    (container,) = pod["spec"]["containers"]
    variable = next(e for e in container["env"] if e["name"] == "C2D_STORAGE_S3_SECRET_KEY")
    assert variable == {
        "name": "C2D_STORAGE_S3_SECRET_KEY",
        "valueFrom": {"secretKeyRef": {"name": o.name, "key": "C2D_STORAGE_S3_SECRET_KEY"}},
    }
    assert o.secret(OWNER)["stringData"] == {"token": TOKEN, "C2D_STORAGE_S3_SECRET_KEY": "s3-secret-value"}
    assert "s3-secret-value" not in repr(o.algorithm_pod(OWNER, CAPACITY))
