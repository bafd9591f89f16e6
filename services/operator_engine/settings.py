"""Operator-Engine settings, from C2D_ENGINE_* environment variables."""

from __future__ import annotations

from dataclasses import dataclass

from plumbing.settings import setting


@dataclass(frozen=True)
class EngineSettings:
    address: str = setting("127.0.0.1:50053", "host:port the engine listens on")
    metrics_address: str = setting(
        "127.0.0.1:9553", "host:port of the engine's Prometheus /metrics (empty: no metrics, RPCs not measured)"
    )
    engine_id: str = setting("local", "this engine's id, unique among the service's engines")
    database_url: str = setting("", "SQLAlchemy URL of the engine's store (default: SQLite in the data dir)")
    backend: str = setting("local", "where stages run: local, kubernetes or noop")
    agent_address: str = setting("", "address pods use to reach JobAgentService (default: the engine's address)")
    workspaces_dir: str = setting("", "where job workspaces live (default: <data dir>/workspaces)")
    configure_timeout_s: float = setting(600.0, "timeout of the configure stage (pod_config)")
    publish_timeout_s: float = setting(600.0, "timeout of the publish stage (pod_publish)")
    queue_timeout_s: float = setting(3600.0, "a job waiting longer than this for room ends 'expired in queue'")
    stop_grace_s: float = setting(
        10.0,
        "on SIGTERM the engine exits within this many seconds; queued jobs stay queued, running "
        "stages resume after the restart",
    )
    heartbeat_s: float = setting(2.0, "seconds between heartbeats on the state stream")
    environment_id: str = setting("local-cpu", "id of the engine's compute environment")
    cpu_cores: float = setting(1.0, "CPU cores per job")
    memory_bytes: int = setting(1 << 30, "memory per job in bytes")
    disk_bytes: int = setting(1 << 30, "disk per job (workspace quota) in bytes")
    max_jobs: int = setting(2, "jobs that run at once; more wait in a FIFO queue")
    max_job_duration_s: int = setting(3600, "the longest an algorithm may run, in seconds")
    storage_expiry_s: int = setting(7 * 24 * 3600, "how long results are kept, in seconds (0 = forever)")
    gpus: int = setting(0, "GPUs per job (nvidia.com/gpu on the kubernetes backend)")
    price_per_minute: str = setting("0", "price per minute in datatokens")
    sandbox: bool = setting(True, "run algorithms in bubblewrap; false only for hosts without it, never in production")
    log_max_bytes: int = setting(10 << 20, "cap of the algorithm's log")
    pod_launcher: str = setting(
        "forkserver",
        "how the local backend starts pod_config/pod_publish: forkserver (forked from one pre-imported "
        "helper, fast) or subprocess (a fresh interpreter per stage)",
    )
    # The kubernetes backend (C2D_ENGINE_BACKEND=kubernetes): each job a ComputeJob owning a
    # volume claim, a Secret, NetworkPolicies and three pods (backends/kubernetes/).
    k8s_namespace: str = setting("c2d", "namespace of the jobs' objects (the engine's own in a cluster)")
    k8s_storage_class: str = setting("", "storage class of each job's volume claim (empty: the cluster's default)")
    k8s_pod_config_image: str = setting("c2d-pod-config:dev", "image of the configure pod (pod_config)")
    k8s_pod_publish_image: str = setting("c2d-pod-publish:dev", "image of the publish pod (pod_publish)")
    k8s_job_service_account: str = setting("c2d-job", "ServiceAccount of the job pods (no role, token not mounted)")
    k8s_node_selector: str = setting("{}", 'JSON object: nodeSelector of the job pods, e.g. {"c2d.dev/pool":"jobs"}')
    k8s_tolerations: str = setting("[]", "JSON list: tolerations of the job pods")
    k8s_image_pull_secrets: tuple[str, ...] = setting((), "comma-separated Secret names the job pods pull with")
    k8s_image_pull_policy: str = setting("IfNotPresent", "imagePullPolicy of the job pods: Always, IfNotPresent, Never")
    k8s_kubeconfig: str = setting("", "kubeconfig path (empty: the in-cluster config of the engine's ServiceAccount)")
    k8s_engine_selector: str = setting(
        "app.kubernetes.io/name=c2d-operator-engine",
        "label (key=value) of the engine's pods: the only pods pod_config and pod_publish may reach in the cluster",
    )
    k8s_blocked_cidrs: tuple[str, ...] = setting(
        ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "127.0.0.0/8"),
        "cluster-internal and metadata ranges no job pod may reach (comma-separated CIDRs)",
    )
    k8s_watch_timeout_s: int = setting(300, "seconds before the engine's pod watch is renewed (timeoutSeconds)")
    k8s_unschedulable_grace_s: float = setting(
        60.0,
        "a job pod no node can take (too much CPU/memory asked, a node selector nothing matches) fails its "
        "job after this many seconds, not at the stage's timeout; the grace lets a cluster autoscaler add a node",
    )
