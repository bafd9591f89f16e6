"""The Kubernetes objects of one job, as plain dicts (what the API takes).

Pure: no client, no I/O. Per job (`JobObjects`): the ComputeJob that owns
everything else, a PersistentVolumeClaim (the job's /data), a Secret (its
token, mounted as a file), a NetworkPolicy for its algorithm pod, and the
three stage pods. Per engine: the NetworkPolicy of the pod programs
(`pod_programs_policy`). Names derive from the job id (`object_name`), and
every object carries the labels the engine's single pod watch selects on.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from plumbing.statuses import TEXT, EndReason, Status
from services.operator_engine.domain.jobs import Capacity, JobSpec

GROUP, VERSION, PLURAL, KIND = "c2d.dev", "v1", "computejobs", "ComputeJob"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "c2d-operator-engine"
ENGINE_LABEL = "c2d.dev/engine"
JOB_LABEL = "c2d.dev/job"
STAGE_LABEL = "c2d.dev/stage"
JOB_ID_ANNOTATION = "c2d.dev/job-id"
GPU = "nvidia.com/gpu"
DATA = "/data"
ALGORITHM_PATH = "/data/transformations/algorithm"
TOKEN_DIR = "/var/run/c2d"
TOKEN_KEY = "token"
# The image's user (deploy/Dockerfile); an algorithm image runs as it too.
POD_USER = 10001
# What the algorithm may only read, and what it writes (DESIGN.md: the /data layout).
READ_ONLY_DIRS = ("inputs", "transformations", "ddos")
WRITABLE_DIRS = ("outputs", "logs")
FAIL_FAST_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError"})
END_REASONS = {
    EndReason.COMPLETED: "Completed",
    EndReason.STOPPED: "Stopped",
    EndReason.TIMED_OUT: "TimedOut",
    EndReason.FAILED: "Failed",
    EndReason.EXPIRED_IN_QUEUE: "ExpiredInQueue",
}
# distribution/reference: [registry[:port]/]path, lowercase path components; tag and digest apart.
_REPOSITORY = re.compile(
    r"(?:(?:[a-zA-Z0-9-]+\.)*[a-zA-Z0-9-]+(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_CREDENTIAL_WORDS = ("SECRET", "PASSWORD", "TOKEN", "ACCESS_KEY", "_KEY", "CREDENTIAL")
_LABEL_VALUE = re.compile(r"[^a-z0-9-]+")


class ImageRefused(ValueError):
    """An algorithm image reference a cluster cannot pull; `part` is the field at fault."""

    def __init__(self, message: str, part: str) -> None:
        super().__init__(message)
        self.part = part


def image_reference(image: str, tag: str = "", checksum: str = "") -> str:
    """`image@sha256:...` when the DDO pins a digest, else `image:tag` (or the image as given)."""
    name, inline_tag, checksum_part = image, "", "checksum"
    if "@" in name:
        name, inline_digest = name.split("@", 1)
        if not checksum:
            checksum, checksum_part = inline_digest, "image"
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, inline_tag = name[: len(name) - len(last)] + last.split(":", 1)[0], last.split(":", 1)[1]
    tag = tag or inline_tag
    if not name or len(name) > 255 or not _REPOSITORY.fullmatch(name):
        raise ImageRefused(f"{image!r} is not a valid image name (e.g. docker.io/library/python)", "image")
    if checksum:
        if not _DIGEST.fullmatch(checksum):
            raise ImageRefused(
                f"checksum {checksum!r} is not an image digest (sha256: and 64 hex digits)", checksum_part
            )
        return f"{name}@{checksum}"
    if tag and not _TAG.fullmatch(tag):
        raise ImageRefused(f"tag {tag!r} is not a valid image tag", "tag")
    return f"{name}:{tag}" if tag else name


def algorithm_command(entrypoint: str) -> list[str]:
    """The entrypoint with $ALGO replaced, split as a shell would (no shell runs it)."""
    try:
        words = shlex.split(entrypoint.replace("${ALGO}", "$ALGO"))
    except ValueError as exc:
        raise ImageRefused(f"the entrypoint cannot be split into words: {exc}", "entrypoint") from None
    if not any("$ALGO" in word for word in words):
        raise ImageRefused("the entrypoint must contain $ALGO", "entrypoint")
    return [word.replace("$ALGO", ALGORITHM_PATH) for word in words]


def is_credential(setting: str) -> bool:
    """A setting the pod programs inherit that is a secret: it reaches them from the
    job's Secret, never as a value in the pod's spec (which many may read)."""
    return any(word in setting for word in _CREDENTIAL_WORDS)


def object_name(job_id: str) -> str:
    """A DNS-1123 name (and label value) for a job id of letters, digits, '-' and '_';
    the hash keeps ids that differ only in case or '_' apart."""
    slug = _LABEL_VALUE.sub("-", job_id.lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha256(job_id.encode()).hexdigest()[:10]
    return f"c2d-{slug}-{digest}" if slug else f"c2d-{digest}"


def label_value(text: str) -> str:
    return _LABEL_VALUE.sub("-", text.lower()).strip("-")[:63].strip("-") or "default"


def quantity_cpu(cores: float) -> str:
    return f"{max(1, math.ceil(cores * 1000))}m"


class ClusterUnfit(RuntimeError):
    """The cluster cannot run this engine's jobs as configured; the message says what to change.
    (Here, not in backend.py: the engine catches it without importing the kubernetes client.)"""


@dataclass(frozen=True)
class ClusterConfig:
    """How the backend places job objects on the cluster (C2D_ENGINE_K8S_* settings)."""

    namespace: str
    engine_id: str
    agent_address: str
    pod_config_image: str
    pod_publish_image: str
    service_account: str = "c2d-job"
    storage_class: str = ""
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()
    image_pull_secrets: Sequence[str] = ()
    image_pull_policy: str = "IfNotPresent"
    engine_selector: tuple[str, str] = ("app.kubernetes.io/name", "c2d-operator-engine")
    blocked_cidrs: Sequence[str] = ()
    gpus: int = 0
    pod_environment: Mapping[str, str] = field(default_factory=dict)  # settings the pod programs inherit

    @property
    def engine_label(self) -> str:
        return label_value(self.engine_id)

    @property
    def selector(self) -> str:
        """The label selector of every pod this engine runs: its one watch."""
        return f"{MANAGED_BY}={MANAGER},{ENGINE_LABEL}={self.engine_label}"

    @property
    def agent_port(self) -> int:
        return int(self.agent_address.rsplit(":", 1)[-1])


def _labels(config: ClusterConfig, name: str, **extra: str) -> dict[str, str]:
    return {MANAGED_BY: MANAGER, ENGINE_LABEL: config.engine_label, JOB_LABEL: name, **extra}


def _egress_outside(config: ClusterConfig) -> list[dict[str, Any]]:
    """Anywhere but the cluster-internal and metadata ranges (IPv4 and IPv6)."""
    v4 = [cidr for cidr in config.blocked_cidrs if ":" not in cidr]
    v6 = [cidr for cidr in config.blocked_cidrs if ":" in cidr]
    return [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": v4}},
        {"ipBlock": {"cidr": "::/0", "except": [*v6, "fc00::/7", "fe80::/10"]}},
    ]


def dns_egress() -> dict[str, Any]:
    return {
        "to": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }


def pod_programs_policy(config: ClusterConfig) -> dict[str, Any]:
    """The engine's one policy for pod_config and pod_publish: DNS, the engine's
    port, and what lies outside the cluster (dataset URLs, S3, IPFS); nothing
    cluster-internal otherwise, no metadata address."""
    key, value = config.engine_selector
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": f"c2d-pod-programs-{config.engine_label}",
            "namespace": config.namespace,
            "labels": {MANAGED_BY: MANAGER, ENGINE_LABEL: config.engine_label},
        },
        "spec": {
            "podSelector": {
                "matchLabels": {MANAGED_BY: MANAGER, ENGINE_LABEL: config.engine_label},
                "matchExpressions": [{"key": STAGE_LABEL, "operator": "In", "values": ["configure", "publish"]}],
            },
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [
                dns_egress(),
                {
                    "to": [{"podSelector": {"matchLabels": {key: value}}}],
                    "ports": [{"protocol": "TCP", "port": config.agent_port}],
                },
                {"to": _egress_outside(config)},
            ],
        },
    }


@dataclass(frozen=True)
class JobObjects:
    """The objects of one job; `owner` is its ComputeJob as created (for the uid)."""

    config: ClusterConfig
    job: JobSpec

    @property
    def name(self) -> str:
        return object_name(self.job.job_id)

    def pod_name(self, stage: str) -> str:
        return f"{self.name}-{stage}"

    def _metadata(self, name: str, owner: Mapping[str, Any] | None, **labels: str) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": self.config.namespace,
            "labels": _labels(self.config, self.name, **labels),
            "annotations": {JOB_ID_ANNOTATION: self.job.job_id},
        }
        if owner is not None:
            metadata["ownerReferences"] = [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": KIND,
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
        return metadata

    def compute_job(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": self._metadata(self.name, None),
            "spec": {"jobId": self.job.job_id, "environmentId": self.job.environment_id},
        }

    def volume_claim(self, owner: Mapping[str, Any], disk_bytes: int) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": str(disk_bytes)}},
        }
        if self.config.storage_class:
            spec["storageClassName"] = self.config.storage_class
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": self._metadata(self.name, owner),
            "spec": spec,
        }

    def secret(self, owner: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": self._metadata(self.name, owner),
            "type": "Opaque",
            "immutable": False,  # rewritten with a new token when an engine restart re-runs a stage
            # The token, and the pod programs' settings that are credentials (S3 keys...).
            "stringData": {TOKEN_KEY: self.job.token, **self._credentials()},
        }

    def _credentials(self) -> dict[str, str]:
        return {name: value for name, value in self.config.pod_environment.items() if is_credential(name)}

    def algorithm_policy(self, owner: Mapping[str, Any]) -> dict[str, Any]:
        """No ingress, and no egress at all; a network-allowed job reaches only
        what lies outside the cluster (no cluster range, no metadata address)."""
        egress = [{"to": _egress_outside(self.config)}, dns_egress()] if self.job.allow_network else []
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": self._metadata(f"{self.name}-algorithm", owner),
            "spec": {
                "podSelector": {"matchLabels": {JOB_LABEL: self.name, STAGE_LABEL: "algorithm"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [],
                "egress": egress,
            },
        }

    # -- pods --------------------------------------------------------------------------------

    def pod_program(self, owner: Mapping[str, Any], stage: str, timeout_s: float) -> dict[str, Any]:
        """pod_config or pod_publish: the whole volume at /data, the token as a file."""
        image = self.config.pod_config_image if stage == "configure" else self.config.pod_publish_image
        env = {
            **self.config.pod_environment,
            "C2D_JOB_ID": self.job.job_id,
            "C2D_JOB_TOKEN_FILE": f"{TOKEN_DIR}/{TOKEN_KEY}",
            "C2D_AGENT_ADDRESS": self.config.agent_address,
            "C2D_DATA_ROOT": DATA,
            "TRACEPARENT": self.job.trace_parent,
            "TMPDIR": "/scratch",
        }
        if stage == "publish":
            env["C2D_FETCH_ALGORITHM_LOG"] = "1"  # the engine's copy of the algorithm's log joins the results
        container = {
            "name": stage,
            "image": image,
            "env": [
                {"name": key, "valueFrom": {"secretKeyRef": {"name": self.name, "key": key}}}
                if key in self._credentials()
                else {"name": key, "value": value}
                for key, value in env.items()
            ],
            "resources": _resources("500m", str(512 << 20)),
            "volumeMounts": [
                {"name": "data", "mountPath": DATA},
                {"name": "token", "mountPath": TOKEN_DIR, "readOnly": True},
                {"name": "scratch", "mountPath": "/scratch"},
            ],
        }
        # part-of=c2d: the engine's ingress policy (deploy/base/network-policies.yaml) admits c2d's own pods.
        return self._pod(owner, stage, container, timeout_s, {"app.kubernetes.io/part-of": "c2d"})

    def algorithm_pod(self, owner: Mapping[str, Any], capacity: Capacity) -> dict[str, Any]:
        """The stranger's code: inputs, transformations and DDOs read-only, only outputs and logs
        writable; no token, no API credential, no setting of the engine's."""
        root = DATA
        env = {
            "DIDS": json.dumps([did.removeprefix("did:op:") for did in self.job.dataset_dids]),
            "TRANSFORMATION_DID": self.job.algorithm_did.removeprefix("did:op:"),
            "VOLUME": root,
            "INPUTS": f"{root}/inputs",
            "OUTPUTS": f"{root}/outputs",
            "LOGS": f"{root}/logs",
        }
        mounts = [
            *({"name": "data", "mountPath": f"{DATA}/{d}", "subPath": d, "readOnly": True} for d in READ_ONLY_DIRS),
            *({"name": "data", "mountPath": f"{DATA}/{d}", "subPath": d} for d in WRITABLE_DIRS),
            {"name": "scratch", "mountPath": "/tmp"},
        ]
        resources = _resources(quantity_cpu(capacity.cpu_cores), str(capacity.memory_bytes))
        if self.config.gpus:
            for side in ("requests", "limits"):
                resources[side][GPU] = str(self.config.gpus)
        container = {
            "name": "algorithm",
            "image": image_reference(self.job.image, self.job.image_tag, self.job.image_checksum),
            "command": algorithm_command(self.job.entrypoint),
            "workingDir": DATA,
            "env": [{"name": key, "value": value} for key, value in env.items()],
            "resources": resources,
            "volumeMounts": mounts,
        }
        network = "allowed" if self.job.allow_network else "none"
        return self._pod(owner, "algorithm", container, self.job.algorithm_timeout_s, {"c2d.dev/network": network})

    def _pod(
        self,
        owner: Mapping[str, Any],
        stage: str,
        container: dict[str, Any],
        timeout_s: float,
        labels: Mapping[str, str],
    ) -> dict[str, Any]:
        config = self.config
        container = {
            **container,
            "imagePullPolicy": config.image_pull_policy,
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": container_security(),
        }
        volumes: list[dict[str, Any]] = [
            {"name": "data", "persistentVolumeClaim": {"claimName": self.name}},
            {"name": "scratch", "emptyDir": {"sizeLimit": "64Mi"}},
        ]
        if stage != "algorithm":
            volumes.append(
                {
                    "name": "token",
                    "secret": {
                        "secretName": self.name,
                        "items": [{"key": TOKEN_KEY, "path": TOKEN_KEY}],
                        "defaultMode": 0o440,
                    },
                }
            )
        spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "serviceAccountName": config.service_account,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,  # no addresses of the namespace's services in the environment
            "activeDeadlineSeconds": max(1, math.ceil(timeout_s)),
            "terminationGracePeriodSeconds": 5,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": POD_USER,
                "runAsGroup": POD_USER,
                "fsGroup": POD_USER,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            # The three pods of a job share one ReadWriteOnce volume: the same node.
            "affinity": {
                "podAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 100,
                            "podAffinityTerm": {
                                "labelSelector": {"matchLabels": {JOB_LABEL: self.name}},
                                "topologyKey": "kubernetes.io/hostname",
                            },
                        }
                    ]
                }
            },
            "containers": [container],
            "volumes": volumes,
        }
        if config.node_selector:
            spec["nodeSelector"] = dict(config.node_selector)
        if config.tolerations:
            spec["tolerations"] = [dict(t) for t in config.tolerations]
        if config.image_pull_secrets:
            spec["imagePullSecrets"] = [{"name": name} for name in config.image_pull_secrets]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": self._metadata(self.pod_name(stage), owner, **{STAGE_LABEL: stage, **labels}),
            "spec": spec,
        }


def container_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _resources(cpu: str, memory: str) -> dict[str, dict[str, str]]:
    # requests = limits: the Guaranteed class, no job squeezed by another
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}}


def job_status(status: Status, stage: str, end_reason: EndReason, code: str, message: str) -> dict[str, Any]:
    """The ComputeJob's status subresource: what `kubectl get computejobs` shows."""
    body: dict[str, Any] = {"status": int(status), "statusText": TEXT[status], "stage": stage}
    if end_reason != EndReason.NONE:
        body.update(endReason=END_REASONS[end_reason], errorCode=code, message=message[:1024])
    return {"status": body}
