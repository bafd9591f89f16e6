"""Container section → local command, and the resolved command really running in the sandbox."""

from __future__ import annotations

import pytest

from services.operator_engine.backends.local.runtimes import ALGORITHM_PATH, resolve, resolve_command
from services.operator_engine.backends.local.sandbox import SandboxRun
from tests.operator_engine.helpers import make_job

PY = "/usr/bin/python3"


def container(entrypoint: str, image: str, tag: str = "latest") -> dict[str, str]:
    return {"entrypoint": entrypoint, "image": image, "tag": tag, "checksum": "sha256:00"}


@pytest.mark.parametrize(
    "image", ["python", "python:3.11-slim", "docker.io/library/python", "ghcr.io/acme/my-python-algo", "bitnami/python"]
)
def test_python_images_run_the_hosts_python3(image):
    assert resolve_command(container("python $ALGO", image)) == (PY, ALGORITHM_PATH)


def test_the_tag_is_recorded_but_does_not_change_the_interpreter():
    old = resolve(container("python3.8 $ALGO", "python", "3.8-slim"))
    new = resolve(container("python3 $ALGO", "python", "3.12"))
    assert old.argv == new.argv == (PY, ALGORITHM_PATH)
    assert (old.tag, new.tag) == ("3.8-slim", "3.12")
    assert old.runtime == new.runtime == "python"


def test_entrypoint_arguments_are_kept_and_split_like_a_shell():
    argv = resolve_command(container('python -u $ALGO --name "a b" ${ALGO}.cfg', "python"))
    assert argv == (PY, "-u", ALGORITHM_PATH, "--name", "a b", ALGORITHM_PATH + ".cfg")


def test_node_image_runs_node():
    assert resolve_command(container("node $ALGO", "node", "18")) == ("/usr/bin/node", ALGORITHM_PATH)


@pytest.mark.parametrize("image", ["ubuntu", "debian:bookworm", "busybox", "alpine:3.19"])
def test_shell_images_run_sh(image):
    assert resolve_command(container("sh $ALGO", image)) == ("/bin/sh", ALGORITHM_PATH)
    assert resolve_command(container("$ALGO", image)) == ("/bin/sh", ALGORITHM_PATH)


def test_a_bare_algo_entrypoint_uses_the_images_interpreter():
    assert resolve_command(container("$ALGO --x 1", "python")) == (PY, ALGORITHM_PATH, "--x", "1")


def test_oceans_sample_image_follows_the_entrypoint():
    assert resolve_command(container("python $ALGO", "oceanprotocol/algo_dockers", "python-branin")) == (
        PY,
        ALGORITHM_PATH,
    )
    assert resolve_command(container("node $ALGO", "oceanprotocol/algo_dockers", "node")) == (
        "/usr/bin/node",
        ALGORITHM_PATH,
    )


def test_entrypoint_without_algo_is_refused():
    with pytest.raises(ValueError, match=r"entrypoint must contain \$ALGO"):
        resolve_command(container("python main.py", "python"))


def test_unknown_image_is_refused_naming_the_supported_ones():
    with pytest.raises(ValueError, match="supported images are .*python.*node.*ubuntu.*alpine"):
        resolve_command(container("cargo run $ALGO", "rust", "1.75"))


def test_a_command_the_image_does_not_have_is_refused():
    with pytest.raises(ValueError, match="'node' is not available for image 'python'"):
        resolve_command(container("node $ALGO", "python"))


@pytest.mark.parametrize(
    "entrypoint,image,source",
    [
        ("python3 $ALGO", "python", "import sys; print('python', sys.version_info[0])\n"),
        ("node $ALGO", "node", "console.log('node', process.version.split('.')[0] > 'v0')\n"),
        ("sh $ALGO", "alpine", "echo sh $((1 + 1))\n"),
    ],
)
async def test_resolved_commands_run_in_the_sandbox(tmp_path, entrypoint, image, source):
    job = make_job(tmp_path, source)
    run = await SandboxRun.start(job.spec(resolve_command(container(entrypoint, image))))
    outcome = await run.wait()
    assert outcome.exit_code == 0, job.log.read_text()
    assert job.log.read_text() == {"python": "python 3\n", "node": "node true\n", "alpine": "sh 2\n"}[image]
