"""A pod's container as a local process: the test kubelet's whole pod -> local mapping.

Program
    ``command`` + ``args`` of the container, with ``$(VAR)`` expanded from
    its environment as a real kubelet does. A container without a command
    runs its image's entrypoint from ``IMAGE_ENTRYPOINTS``: an image whose
    repository name ends in ``pod-config`` runs ``c2d-pod-config``, in
    ``pod-publish`` ``c2d-pod-publish`` (the project's console scripts).
    Anything else without a command cannot start (CreateContainerConfigError).
    The image is otherwise ignored: the host's programs run (``python3``,
    ``sh``...), with this interpreter's bin directory first on PATH.
Environment
    Only the pod's: ``env`` (``value``, and ``valueFrom`` secretKeyRef,
    configMapKeyRef and fieldRef) and ``envFrom``, plus PATH, HOME=/tmp and
    HOSTNAME. Nothing of the test process leaks in.
Volumes
    persistentVolumeClaim: one directory per claim, ``<root>/claims/<namespace>/<claim>``,
    shared by every pod that mounts it (as a ReadWriteOnce volume on one node
    is). emptyDir: a directory per pod. secret and configMap: their keys
    written as files (``items`` and ``defaultMode`` honoured).
Mounts
    The process runs under bubblewrap in a mount namespace that mirrors the
    host (every top-level directory bound read-write, fresh /proc and /dev)
    with each volumeMount bound at its mountPath: ``subPath`` is that
    subdirectory of the volume (created if missing, as a kubelet does),
    ``readOnly`` a read-only bind. So ``/data/inputs`` is really there and
    really read-only. Directories of the host on the way to a mountPath are
    rebuilt in the sandbox, never created on the host. The termination
    message file (``terminationMessagePath``) is bound from a per-container
    file, and read back into the terminated state.
Not enforced
    resources (limits), securityContext (the process runs as the test's
    user), NetworkPolicies (the host network is shared), imagePullPolicy.
    One container per pod; no init containers.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_ENTRYPOINTS: dict[str, list[str]] = {
    "pod-config": ["c2d-pod-config"],
    "pod-publish": ["c2d-pod-publish"],
}
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
# distribution/reference: [registry[:port]/]path[:tag][@digest], lowercase path components
_IMAGE = re.compile(
    r"(?:(?:[a-zA-Z0-9-]+\.)*[a-zA-Z0-9-]+(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)


class NotStartable(Exception):
    """The container cannot start: it stays waiting with this reason."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


# Reads an object through the API: (plural, namespace, name) -> the object, or None if absent.
ObjectReader = Callable[[str, str, str], Mapping[str, Any] | None]


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool


@dataclass(frozen=True)
class LocalContainer:
    name: str
    argv: list[str]  # bubblewrap's, ending with the container's program
    env: dict[str, str]
    termination_message: Path

    def start(self, log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as output:
            return subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the kubelet signals the whole group
                cwd="/",
            )


def valid_image(image: str) -> bool:
    return bool(image) and len(image) <= 255 and _IMAGE.fullmatch(image) is not None


def expand(text: str, env: Mapping[str, str]) -> str:
    """$(VAR) from env (left as is when undefined); $$ is a literal $."""
    return _REFERENCE.sub(lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), text)


def _entrypoint(image: str) -> list[str] | None:
    repository = image.split("@", maxsplit=1)[0].rsplit("/", 1)[-1].split(":", maxsplit=1)[0].replace("_", "-")
    return next((argv for suffix, argv in IMAGE_ENTRYPOINTS.items() if repository.endswith(suffix)), None)


def _field(pod: Mapping[str, Any], path: str) -> str:
    metadata = pod["metadata"]
    if found := re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path):
        return (metadata.get(found[1]) or {}).get(found[2], "")
    simple = {
        "metadata.name": metadata.get("name"),
        "metadata.namespace": metadata.get("namespace"),
        "metadata.uid": metadata.get("uid"),
        "spec.nodeName": pod["spec"].get("nodeName"),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }
    if path not in simple:
        raise NotStartable("CreateContainerConfigError", f"unsupported fieldRef {path!r}")
    return simple[path] or ""


def _key_of(plural: str, ref: Mapping[str, Any], namespace: str, read: ObjectReader) -> str | None:
    obj = read(plural, namespace, ref.get("name", ""))
    kind = "secret" if plural == "secrets" else "configmap"
    if obj is None:
        if ref.get("optional"):
            return None
        raise NotStartable("CreateContainerConfigError", f'{kind} "{ref.get("name")}" not found')
    data = _decoded(plural, obj)
    if ref["key"] not in data:
        if ref.get("optional"):
            return None
        raise NotStartable(
            "CreateContainerConfigError",
            f"couldn't find key {ref['key']} in {kind.title()} {namespace}/{ref.get('name')}",
        )
    return data[ref["key"]].decode()


def _decoded(plural: str, obj: Mapping[str, Any]) -> dict[str, bytes]:
    if plural == "secrets":
        return {key: base64.b64decode(value) for key, value in (obj.get("data") or {}).items()}
    data = {key: str(value).encode() for key, value in (obj.get("data") or {}).items()}
    data.update({key: base64.b64decode(value) for key, value in (obj.get("binaryData") or {}).items()})
    return data


def environment(pod: Mapping[str, Any], container: Mapping[str, Any], read: ObjectReader) -> dict[str, str]:
    namespace = pod["metadata"]["namespace"]
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/tmp",
        "HOSTNAME": pod["metadata"]["name"],
    }
    for source in container.get("envFrom") or []:
        plural, ref = (
            ("secrets", source["secretRef"])
            if "secretRef" in source
            else ("configmaps", source.get("configMapRef") or {})
        )
        obj = read(plural, namespace, ref.get("name", ""))
        if obj is None and not ref.get("optional"):
            raise NotStartable("CreateContainerConfigError", f'{plural[:-1]} "{ref.get("name")}" not found')
        for key, raw in _decoded(plural, obj or {}).items():
            env[source.get("prefix", "") + key] = raw.decode()
    for variable in container.get("env") or []:
        source = variable.get("valueFrom")
        if source is None:
            env[variable["name"]] = expand(variable.get("value", ""), env)
            continue
        value: str | None
        if "secretKeyRef" in source:
            value = _key_of("secrets", source["secretKeyRef"], namespace, read)
        elif "configMapKeyRef" in source:
            value = _key_of("configmaps", source["configMapKeyRef"], namespace, read)
        elif "fieldRef" in source:
            value = _field(pod, source["fieldRef"]["fieldPath"])
        else:
            raise NotStartable("CreateContainerConfigError", f"unsupported valueFrom for {variable['name']}")
        if value is not None:
            env[variable["name"]] = value
    return env


def _write_keys(directory: Path, data: Mapping[str, bytes], volume: Mapping[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    mode = volume.get("defaultMode", 0o644)
    items = volume.get("items") or [{"key": key, "path": key} for key in data]
    for item in items:
        if item["key"] not in data:
            raise NotStartable("ContainerCreating", f"MountVolume.SetUp failed: key {item['key']} not found")
        path = directory / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[item["key"]])
        path.chmod(item.get("mode", mode))


def volumes(pod: Mapping[str, Any], root: Path, read: ObjectReader) -> dict[str, Path]:
    """Each volume of the pod as a local directory."""
    namespace, uid = pod["metadata"]["namespace"], pod["metadata"]["uid"]
    local: dict[str, Path] = {}
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        own = root / "pods" / uid / "volumes" / name
        if "persistentVolumeClaim" in volume:
            local[name] = claim_directory(root, namespace, volume["persistentVolumeClaim"]["claimName"])
        elif "emptyDir" in volume:
            own.mkdir(parents=True, exist_ok=True)
            local[name] = own
        elif "secret" in volume or "configMap" in volume:
            plural, spec = ("secrets", volume["secret"]) if "secret" in volume else ("configmaps", volume["configMap"])
            obj_name = spec.get("secretName") or spec.get("name", "")
            obj = read(plural, namespace, obj_name)
            if obj is None and not spec.get("optional"):
                raise NotStartable(
                    "ContainerCreating",
                    f'MountVolume.SetUp failed for volume "{name}" : {plural[:-1]} "{obj_name}" not found',
                )
            _write_keys(own, _decoded(plural, obj or {}), spec)
            local[name] = own
        else:
            kind = next((key for key in volume if key != "name"), "?")
            raise NotStartable("CreateContainerConfigError", f"the test kubelet cannot mount a {kind} volume ({name})")
    return local


def claim_directory(root: Path, namespace: str, claim: str) -> Path:
    directory = root / "claims" / namespace / claim
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _mirror(directory: Path, targets: list[Path]) -> list[str]:
    """bwrap arguments that rebuild ``directory`` of the host, leaving room for the targets below it."""
    args: list[str] = []
    for entry in sorted(directory.iterdir()):
        if entry in (Path("/proc"), Path("/dev")):
            continue
        inside = [t for t in targets if t == entry or entry in t.parents]
        if not inside:
            if entry.is_symlink():
                args += ["--symlink", os.readlink(entry), str(entry)]
            else:
                args += ["--bind", str(entry), str(entry)]
        elif entry in targets:
            continue  # a volume is mounted here instead
        elif entry.is_dir() and not entry.is_symlink():
            args += ["--dir", str(entry), *_mirror(entry, inside)]
        else:
            raise NotStartable(
                "CreateContainerConfigError", f"cannot mount below {entry}: not a directory on this host"
            )
    return args


def sandbox_argv(mounts: list[Mount], program: list[str], workdir: str) -> list[str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise NotStartable(
            "CreateContainerConfigError", "bubblewrap (bwrap) is not installed: the test kubelet needs it"
        )
    resolved = [(Path(os.path.realpath(mount.target)), mount) for mount in mounts]
    beside_host = [target for target, _ in resolved if target.parts[1:2] not in (("proc",), ("dev",))]
    args = [
        bwrap,
        "--die-with-parent",
        "--unshare-pid",
        *_mirror(Path("/"), beside_host),
        "--proc",
        "/proc",
        "--dev",
        "/dev",
    ]
    for target, mount in sorted(resolved, key=lambda pair: len(pair[0].parts)):
        args += ["--ro-bind" if mount.read_only else "--bind", str(mount.source), str(target)]
    return [*args, "--chdir", workdir, "--", *program]


def prepare(pod: Mapping[str, Any], root: Path, read: ObjectReader) -> LocalContainer:
    """The pod's only container, ready to start; raises NotStartable with the reason a kubelet would give."""
    containers = pod["spec"].get("containers") or []
    if len(containers) != 1 or pod["spec"].get("initContainers"):
        raise NotStartable("CreateContainerConfigError", "the test kubelet runs pods of exactly one container")
    container = containers[0]
    if not valid_image(container.get("image", "")):
        raise NotStartable(
            "InvalidImageName",
            f'Failed to apply default image tag "{container.get("image")}": invalid reference format',
        )
    env = environment(pod, container, read)
    program = [expand(arg, env) for arg in (container.get("command") or _entrypoint(container["image"]) or [])]
    if not program:
        raise NotStartable(
            "CreateContainerConfigError",
            f"no command, and the test kubelet knows no entrypoint for {container['image']}",
        )
    program += [expand(arg, env) for arg in container.get("args") or []]
    local = volumes(pod, root, read)
    mounts = []
    for mount in container.get("volumeMounts") or []:
        if mount["name"] not in local:
            raise NotStartable("CreateContainerConfigError", f"volumeMount {mount['name']} names no volume of the pod")
        source = local[mount["name"]]
        if mount.get("subPath"):
            source = source / mount["subPath"]
            if not source.exists():
                source.mkdir(parents=True)
        mounts.append(Mount(source, mount["mountPath"], bool(mount.get("readOnly"))))
    message = root / "pods" / pod["metadata"]["uid"] / f"{container['name']}.termination-log"
    message.parent.mkdir(parents=True, exist_ok=True)
    message.write_bytes(b"")
    mounts.append(Mount(message, container.get("terminationMessagePath", TERMINATION_MESSAGE_PATH), False))
    argv = sandbox_argv(mounts, program, container.get("workingDir") or "/")
    return LocalContainer(container["name"], argv, env, message)
