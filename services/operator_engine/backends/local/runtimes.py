"""Map an algorithm DDO's ``container`` section to a command for the local engine.

The local engine has no container images: it runs the algorithm with an
interpreter installed on the host (visible inside the sandbox because /usr is
bound read-only). The image chooses the runtime; the image's tag is recorded
but never changes the interpreter (``python:3.8`` and ``python:3.12`` both run
the host's python3).

Image → runtime (the image name is compared without registry host,
``library/`` prefix, inline ``:tag`` or ``@digest``):

============================================  ==========  ==========================
image                                         runtime     entrypoint commands allowed
============================================  ==========  ==========================
name containing ``python`` (python,          python      python, python3, python3.N
``bitnami/python``, ``my-python-algo``)                   → /usr/bin/python3
name containing ``node`` (node, nodejs)       node        node, nodejs → /usr/bin/node
ubuntu, debian, busybox, alpine               shell       (shells only, see below)
``oceanprotocol/algo_dockers`` (Ocean's       ocean       python… → /usr/bin/python3,
sample image; the tag names the runtime)                  node → /usr/bin/node
============================================  ==========  ==========================

Every runtime also accepts the shells ``sh`` (→ /bin/sh) and ``bash``
(→ /bin/bash), since every one of those images has them. An entrypoint that
starts with ``$ALGO`` itself runs the file with the runtime's interpreter
(/bin/sh for the shell runtime; python3 for ocean).

The entrypoint must contain ``$ALGO`` (or ``${ALGO}``), which becomes
``/data/transformations/algorithm``; it is split with :func:`shlex.split`,
so quoting works as in a shell, but no shell runs it.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass


class ContainerRefused(ValueError):
    """A container this host cannot run; `part` names what is at fault: entrypoint or image."""

    def __init__(self, message: str, part: str) -> None:
        super().__init__(message)
        self.part = part


class RuntimeMissing(ValueError):
    """The container is fine, but its runtime is not installed on this host."""


ALGORITHM_PATH = "/data/transformations/algorithm"
PYTHON = "/usr/bin/python3"
NODE = "/usr/bin/node"
SH = "/bin/sh"
BASH = "/bin/bash"

_PYTHON_WORDS = re.compile(r"^python(3(\.\d+)?)?$")
_SHELLS = {"sh": SH, "bash": BASH}


@dataclass(frozen=True)
class Runtime:
    name: str
    default: str  # interpreter for an entrypoint that starts with $ALGO
    commands: Mapping[str, str]  # entrypoint word → host path (python words matched by pattern)
    python_words: bool = False


_RUNTIMES = {
    "python": Runtime("python", PYTHON, {}, python_words=True),
    "node": Runtime("node", NODE, {"node": NODE, "nodejs": NODE}),
    "shell": Runtime("shell", SH, {}),
    "ocean": Runtime("ocean", PYTHON, {"node": NODE, "nodejs": NODE}, python_words=True),
}
_SHELL_IMAGES = {"ubuntu", "debian", "busybox", "alpine"}
_EXACT_IMAGES = {"oceanprotocol/algo_dockers": "ocean"}
SUPPORTED_IMAGES = "python*, *python*, node*, ubuntu, debian, busybox, alpine, oceanprotocol/algo_dockers"


@dataclass(frozen=True)
class ResolvedCommand:
    argv: tuple[str, ...]  # as run inside the sandbox
    runtime: str  # python | node | shell | ocean
    image: str
    tag: str  # recorded only; the host's interpreter runs whatever the tag says


def _image_name(image: str) -> str:
    name = image.strip().lower().split("@", 1)[0]
    parts = name.split("/")
    # drop a registry host ("docker.io/", "ghcr.io/", "localhost:5000/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if parts and parts[0] == "library":
        parts = parts[1:]
    name = "/".join(parts)
    last = name.rsplit("/", 1)[-1]
    if ":" in last:  # inline tag
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    return name


def runtime_for_image(image: str) -> Runtime:
    name = _image_name(image)
    if name in _EXACT_IMAGES:
        return _RUNTIMES[_EXACT_IMAGES[name]]
    last = name.rsplit("/", 1)[-1]
    if "python" in last:
        return _RUNTIMES["python"]
    if "node" in last:
        return _RUNTIMES["node"]
    if last in _SHELL_IMAGES:
        return _RUNTIMES["shell"]
    raise ContainerRefused(f"unsupported image {image!r}: supported images are {SUPPORTED_IMAGES}", "image")


def _host_program(runtime: Runtime, word: str) -> str | None:
    if runtime.python_words and _PYTHON_WORDS.match(word):
        return PYTHON
    if word in runtime.commands:
        return runtime.commands[word]
    return _SHELLS.get(word)


def resolve(container: Mapping[str, str]) -> ResolvedCommand:
    """The full resolution, with the runtime chosen and the tag recorded."""
    entrypoint = str(container.get("entrypoint") or "")
    image = str(container.get("image") or "")
    tag = str(container.get("tag") or "")
    if "$ALGO" not in entrypoint and "${ALGO}" not in entrypoint:
        raise ContainerRefused("entrypoint must contain $ALGO", "entrypoint")
    runtime = runtime_for_image(image)
    words = shlex.split(entrypoint.replace("${ALGO}", "$ALGO"))
    words = [w.replace("$ALGO", ALGORITHM_PATH) for w in words]
    if words[0] == ALGORITHM_PATH:
        words.insert(0, runtime.default)
    else:
        program = _host_program(runtime, words[0])
        if program is None:
            raise ContainerRefused(
                f"entrypoint command {words[0]!r} is not available for image {image!r} (runtime {runtime.name})",
                "entrypoint",
            )
        words[0] = program
    if not os.access(words[0], os.X_OK):
        raise RuntimeMissing(f"runtime {runtime.name}: {words[0]} is not installed on this host")
    return ResolvedCommand(tuple(words), runtime.name, image, tag)


def resolve_command(container: Mapping[str, str]) -> tuple[str, ...]:
    """argv for :class:`SandboxSpec` from a DDO's ``metadata.algorithm.container``."""
    return resolve(container).argv
