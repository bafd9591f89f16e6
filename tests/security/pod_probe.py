"""Pod programs for test_pod_privileges.py: an attacker's code in a pod's place (what a
mistake in pod_config's or pod_publish's parsing would give a hostile dataset or DDO).
It writes what it is and what it could reach to its stage's admin log, one JSON line,
then runs the real program, so the job still goes on."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
from typing import Any

from plumbing import pods
from services.pod_config import program as pod_config
from services.pod_publish import program as pod_publish

MARK = "POD-PROBE "
TARGETS = "C2D_PROBE_TARGETS"  # a world-readable file: {name: path} to try


def _reach(path: str) -> str:
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            with open(path, "rb") as f:
                f.read(1)
    except OSError as e:
        return type(e).__name__
    return "READ"


SECRET_PREFIX = b"engine-secret-"


def targets_secret(targets: dict[str, str]) -> str:
    return targets.pop("secret-sha256", "")


def _in_memory(digest: str) -> bool:
    """Whether the engine's secret (known here only by its sha256) is anywhere in this
    process's own writable memory: its environment block, its heap, what a fork inherited."""
    with open("/proc/self/maps") as f:
        regions = [line.split() for line in f]
    for region in regions:
        start, end = (int(x, 16) for x in region[0].split("-"))
        if not region[1].startswith("rw") or (len(region) > 5 and region[5] in ("[vvar]", "[vsyscall]")):
            continue
        memory = ctypes.string_at(start, end - start)
        at = memory.find(SECRET_PREFIX)
        while at >= 0:
            candidate = memory[at : at + len(SECRET_PREFIX) + 16]
            if hashlib.sha256(candidate).hexdigest() == digest:
                return True
            at = memory.find(SECRET_PREFIX, at + 1)
    return False


def _status(path: str) -> dict[str, str]:
    with open(path) as f:
        return dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)


def findings() -> dict[str, Any]:
    with open(os.environ[TARGETS]) as f:
        targets: dict[str, str] = json.load(f)
    secret = targets_secret(targets)
    reached = {name: _reach(path) for name, path in targets.items()}
    # the same from where the pod stands: its workspace's neighbours, its results root
    workspaces = os.path.join(os.getcwd(), "..")
    for name, path in targets.items():
        if "/workspaces/" in path:
            reached[f"relative:{name}"] = _reach(os.path.join("..", path.split("/workspaces/", 1)[1]))
    root = os.environ.get("C2D_STORAGE_LOCAL_ROOT", "")
    if root.startswith("/proc/self/fd/"):
        reached["results-root-listing"] = _reach(root)
        for name, path in targets.items():
            if "/results/" in path:
                reached[f"descriptor:{name}"] = _reach(os.path.join(root, path.split("/results/", 1)[1]))
    reached["workspaces-listing"] = _reach(workspaces)
    keys = ("Uid", "Gid", "Groups", "NoNewPrivs", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
    return {
        "threads": [
            {key: _status(f"/proc/self/task/{task}/status")[key].split() for key in keys}
            for task in os.listdir("/proc/self/task")
        ],
        "reached": reached,
        "environ": _reach("/proc/self/environ"),
        "service_token_in_memory": _in_memory(secret),
    }


async def configure(pod: pods.Pod, channel: Any) -> int:
    print(MARK + json.dumps(findings()), flush=True)
    return await pod_config.run(pod, channel)


async def publish(pod: pods.Pod, channel: Any) -> int:
    print(MARK + json.dumps(findings()), flush=True)
    return await pod_publish.run(pod, channel)
