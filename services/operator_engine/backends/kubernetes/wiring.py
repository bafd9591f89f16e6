"""The kubernetes backend from the engine's settings, and the event log that mirrors to it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kubernetes.client
import kubernetes.config

from plumbing import errors, untrusted
from services.operator_engine.backends.kubernetes.backend import ClusterUnfit, KubernetesBackend
from services.operator_engine.backends.kubernetes.objects import ClusterConfig
from services.operator_engine.domain.changes import StateChange
from services.operator_engine.domain.ports import EventLog
from services.operator_engine.settings import EngineSettings

USER_AGENT = "c2d-operator-engine"


def api_client(kubeconfig: str) -> kubernetes.client.ApiClient:
    """From the kubeconfig file, or (empty) the in-cluster config of the pod's ServiceAccount."""
    if kubeconfig:
        client = kubernetes.config.new_client_from_config(config_file=kubeconfig)
    else:
        client = kubernetes.client.ApiClient(_in_cluster())
    client.user_agent = USER_AGENT  # the engine's calls, told apart in the API server's audit log
    return client


def _in_cluster() -> kubernetes.client.Configuration:
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException as exc:
        raise ClusterUnfit(
            f"not running in a cluster ({exc}): set C2D_ENGINE_K8S_KUBECONFIG to a kubeconfig path"
        ) from None
    return configuration


def _json(raw: str, kind: type, name: str) -> Any:
    try:
        value = untrusted.parse_json(raw or ("{}" if kind is dict else "[]"), f"C2D_ENGINE_{name}")
    except (ValueError, errors.InvalidArgument) as exc:
        raise ClusterUnfit(f"C2D_ENGINE_{name}={raw!r} is not JSON: {exc}") from None
    if not isinstance(value, kind):
        raise ClusterUnfit(f"C2D_ENGINE_{name}={raw!r}: expected a JSON {kind.__name__}")
    return value


def make_backend(config: EngineSettings, pod_environment: Mapping[str, str]) -> KubernetesBackend:
    key, _, value = config.k8s_engine_selector.partition("=")
    if not key or not value:
        raise ClusterUnfit(f"C2D_ENGINE_K8S_ENGINE_SELECTOR={config.k8s_engine_selector!r}: expected key=value")
    if config.k8s_image_pull_policy not in ("Always", "IfNotPresent", "Never"):
        raise ClusterUnfit(
            f"C2D_ENGINE_K8S_IMAGE_PULL_POLICY={config.k8s_image_pull_policy!r}: expected Always, IfNotPresent or Never"
        )
    cluster = ClusterConfig(
        namespace=config.k8s_namespace,
        engine_id=config.engine_id,
        agent_address=config.agent_address,
        pod_config_image=config.k8s_pod_config_image,
        pod_publish_image=config.k8s_pod_publish_image,
        service_account=config.k8s_job_service_account,
        storage_class=config.k8s_storage_class,
        node_selector=_json(config.k8s_node_selector, dict, "K8S_NODE_SELECTOR"),
        tolerations=_json(config.k8s_tolerations, list, "K8S_TOLERATIONS"),
        image_pull_secrets=config.k8s_image_pull_secrets,
        image_pull_policy=config.k8s_image_pull_policy,
        engine_selector=(key, value),
        blocked_cidrs=config.k8s_blocked_cidrs,
        gpus=config.gpus,
        pod_environment=dict(pod_environment),
    )
    return KubernetesBackend(
        cluster,
        api_client(config.k8s_kubeconfig),
        disk_bytes=config.disk_bytes,
        watch_timeout_s=config.k8s_watch_timeout_s,
        unschedulable_grace_s=config.k8s_unschedulable_grace_s,
    )


class MirroredEventLog:
    """The engine's event log, each change also shown on the job's ComputeJob."""

    def __init__(self, events: EventLog, backend: KubernetesBackend) -> None:
        self._events, self._backend = events, backend

    async def append(self, change: StateChange, stage: str | None = None, workflow: bytes | None = None) -> int:
        sequence = await self._events.append(change, stage, workflow)
        self._backend.mirror(change, stage)
        return sequence
