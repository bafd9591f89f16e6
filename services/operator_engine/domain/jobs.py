"""The values the orchestrator and the backends share: a job, its environment, how a stage ended."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ADMIN_DIR = "admin"  # in a job's workspace: the operator's logs, and the engine's algorithm.log
# The algorithm's stdout and stderr as the engine wrote them, relative to the workspace:
# outside data/, so the algorithm never has a path to it.
ALGORITHM_LOG = f"{ADMIN_DIR}/algorithm.log"


@dataclass(frozen=True)
class JobSpec:
    """What the engine itself needs from a job's workflow."""

    job_id: str
    environment_id: str
    token: str
    workspace: Path  # holds data/ (the job's /data) and admin/ (operator logs)
    entrypoint: str
    image: str
    allow_network: bool
    algorithm_timeout_s: float
    dataset_dids: tuple[str, ...]
    algorithm_did: str
    image_tag: str = ""  # the algorithm image's tag and digest (sha256:...), as its DDO gives them
    image_checksum: str = ""
    trace_parent: str = ""  # the job's W3C trace context, from its workflow: its stages and pods join it

    @property
    def data_root(self) -> Path:
        return self.workspace / "data"

    @property
    def admin_dir(self) -> Path:
        return self.workspace / ADMIN_DIR


@dataclass(frozen=True)
class StageExit:
    """How a stage's process (a pod, or the algorithm) ended."""

    exit_code: int | None  # None: it never exited by itself (killed, or the launcher failed)
    timed_out: bool = False
    detail: str = ""  # what the backend can say about it: "killed by SIGKILL", "OOM-killed", ...
    signal: int | None = None
    oom_killed: bool = False
    stopped: bool = False
    disk_quota_exceeded: bool = False
    duration_s: float = 0.0
    # Its program never started (no node could take its pod, its image cannot be
    # pulled): `detail` alone says why, for the one who can change that.
    not_started: bool = False

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not (
            self.oom_killed or self.timed_out or self.stopped or self.disk_quota_exceeded or self.not_started
        )

    def to_json(self) -> dict[str, object]:
        """The algorithm's outcome, as the job's state changes carry it."""
        return {
            "exit_code": self.exit_code,
            "signal": self.signal,
            "oom_killed": self.oom_killed,
            "timed_out": self.timed_out,
            "stopped": self.stopped,
            "duration_seconds": self.duration_s,
        }


@dataclass(frozen=True)
class Capacity:
    cpu_cores: float
    memory_bytes: int
    disk_bytes: int
    log_max_bytes: int


@dataclass(frozen=True)
class EnvironmentSpec:
    """The compute environment an engine offers (one per engine today)."""

    id: str
    description: str
    cpu_cores: float
    memory_bytes: int
    disk_bytes: int
    max_jobs: int
    max_job_duration_s: int
    storage_expiry_s: int
    price_per_minute: str
    log_max_bytes: int
    gpus: int = 0
    gpu_type: str = ""
