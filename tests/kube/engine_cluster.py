"""The operator-engine on the kubernetes backend against the emulated cluster:
an API server with the engine's RBAC (its client holds the engine's
ServiceAccount token, so a verb the Role lacks fails), a test kubelet, and the
engine in this process configured through a kubeconfig."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes.client

from services.operator_engine.backends.kubernetes.objects import JOB_LABEL
from testkit import kube
from testkit.kube import manifests
from tests.operator_engine.engine_harness import EngineClient, engine_running

NAMESPACE = "c2d"
ENGINE_SA = "c2d-operator-engine"
RBAC = manifests.DEPLOY_BASE / "engine-rbac.yaml"


@dataclass
class Cluster:
    api: kube.ApiServer
    kubelet: kube.Kubelet
    kubeconfig: Path

    def pod_phase(self, name: str) -> str:
        client = self.api.api_client()
        try:
            pods = kubernetes.client.CoreV1Api(client).list_namespaced_pod(
                NAMESPACE, field_selector=f"metadata.name={name}"
            )
            return pods.items[0].status.phase if pods.items and pods.items[0].status else ""
        finally:
            client.close()

    def pod_scheduled(self, name: str) -> str:
        """The message of the pod's PodScheduled condition while it is False ("" otherwise)."""
        client = self.api.api_client()
        try:
            pods = kubernetes.client.CoreV1Api(client).list_namespaced_pod(
                NAMESPACE, field_selector=f"metadata.name={name}"
            )
            conditions = (pods.items[0].status.conditions or []) if pods.items and pods.items[0].status else []
            return next((c.message or "" for c in conditions if c.type == "PodScheduled" and c.status == "False"), "")
        finally:
            client.close()

    def owned_by_jobs(self) -> list[str]:
        """What any job still owns in the namespace (kind/name), as the administrator sees it."""
        client = self.api.api_client()
        core, custom = kubernetes.client.CoreV1Api(client), kubernetes.client.CustomObjectsApi(client)
        networking = kubernetes.client.NetworkingV1Api(client)
        selector = f"{JOB_LABEL}"
        found = [
            *(f"Pod/{o.metadata.name}" for o in core.list_namespaced_pod(NAMESPACE, label_selector=selector).items),
            *(
                f"PersistentVolumeClaim/{o.metadata.name}"
                for o in core.list_namespaced_persistent_volume_claim(NAMESPACE, label_selector=selector).items
            ),
            *(
                f"Secret/{o.metadata.name}"
                for o in core.list_namespaced_secret(NAMESPACE, label_selector=selector).items
            ),
            *(
                f"NetworkPolicy/{o.metadata.name}"
                for o in networking.list_namespaced_network_policy(NAMESPACE, label_selector=selector).items
            ),
            *(
                f"ComputeJob/{o['metadata']['name']}"
                for o in custom.list_namespaced_custom_object("c2d.dev", "v1", NAMESPACE, "computejobs")["items"]
            ),
        ]
        client.close()
        return found


@contextlib.contextmanager
def cluster(root: Path, *, gpus: int = 0, cpu: str = "2", rbac: bool = True, **server: Any) -> Iterator[Cluster]:
    with kube.ApiServer(**server) as api:
        if rbac:
            api.apply(manifests.load(RBAC))
        token = api.token_for(NAMESPACE, ENGINE_SA)
        kubeconfig = api.write_kubeconfig(root / "kubeconfig", token)
        with kube.Kubelet(api, root / "node", gpus=gpus, cpu=cpu) as kubelet:
            yield Cluster(api, kubelet, kubeconfig)


def engine_settings(c: Cluster, **settings: Any) -> dict[str, Any]:
    return {
        "backend": "kubernetes",
        "k8s_kubeconfig": str(c.kubeconfig),
        "k8s_namespace": NAMESPACE,
        "k8s_storage_class": "standard",
        "k8s_watch_timeout_s": 5,
        **settings,
    }


@contextlib.asynccontextmanager
async def k8s_engine(c: Cluster, database_url: str, workspaces: Path, **settings: Any) -> AsyncIterator[EngineClient]:
    async with engine_running(database_url, workspaces, **engine_settings(c, **settings)) as engine:
        yield engine


def created_objects(c: Cluster, since: int = 0) -> list[dict[str, Any]]:
    """The bodies of every object the engine created (POST requests), in order."""
    bodies = []
    for request in c.api.emulator.requests[since:]:
        described = c.api.emulator.describe(request)
        agent = request.headers.get("User-Agent", "")
        if (
            described
            and described[0] == "create"
            and not agent.startswith("testkit")
            and isinstance(request.data, dict)
        ):
            bodies.append(request.data)
    return bodies


def status_patches(c: Cluster, since: int = 0) -> list[dict[str, Any]]:
    """The statuses the engine wrote to ComputeJobs (patches of computejobs/status), in order."""
    bodies = []
    for request in c.api.emulator.requests[since:]:
        described = c.api.emulator.describe(request)
        if described and described[:3] == ("patch", "c2d.dev", "computejobs/status"):
            bodies.append(request.data["status"])
    return bodies
