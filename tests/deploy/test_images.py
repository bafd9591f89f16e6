"""deploy/Dockerfile: lint-clean, installs from uv.lock, runs non-root, and
each image carries what its program imports. No Docker engine runs here, so
the images' venvs and code are rebuilt in a temporary folder as the
Dockerfile's stages build them (uv from the lock, wheels from its cache) and the
programs are started there."""

from __future__ import annotations

import pytest

from tests.deploy import checks
from tests.deploy.conftest import edit

SERVER_MODULES = {
    "provider": "services.provider.server",
    "operator_service": "services.operator_service.server",
    "operator_engine": "services.operator_engine.server",
}


def test_hadolint_passes_on_every_dockerfile(skaffold):
    assert checks.dockerfiles(checks.REPO_ROOT, skaffold) == [checks.REPO_ROOT / "deploy" / "Dockerfile"]
    assert checks.hadolint_problems(checks.dockerfiles(checks.REPO_ROOT, skaffold)) == []


def test_hadolint_refuses_an_unpinned_system_install(broken, skaffold):
    edit(
        broken / "deploy" / "Dockerfile",
        "FROM runtime AS source\n",
        "FROM runtime AS source\nRUN apt-get update && apt-get install -y gcc\n",
    )
    problems = checks.hadolint_problems(checks.dockerfiles(broken, skaffold))
    assert any("DL3008" in p for p in problems), problems  # pin versions in apt-get install
    assert any("DL3015" in p for p in problems), problems  # --no-install-recommends


def test_the_images_install_from_the_lock_as_a_non_root_uid_without_build_tools(skaffold):
    assert checks.dockerfile_problems(checks.REPO_ROOT, skaffold) == []
    assert checks.image_uid(checks.REPO_ROOT, skaffold) == 10001


def test_an_install_outside_the_lock_another_uv_a_root_user_or_tools_in_a_final_stage_are_named(broken, skaffold):
    dockerfile = broken / "deploy" / "Dockerfile"
    edit(
        dockerfile,
        "RUN uv sync --frozen --no-dev --no-install-project --no-install-workspace",
        "RUN pip install --no-cache-dir grpcio==1.85.4",
    )
    edit(dockerfile, "ARG UV_VERSION=0.13.9", "ARG UV_VERSION=0.4.0")
    edit(
        dockerfile,
        "FROM runtime AS pod\nCOPY --from=pod-venv /opt/venv /opt/venv\nCOPY --from=source /app /app\nUSER 10001:10001\n",
        "FROM uv AS pod\nCOPY --from=pod-venv /opt/venv /opt/venv\nCOPY --from=source /app /app\n",
    )
    assert checks.dockerfile_problems(broken, skaffold) == [
        "Dockerfile: the servers do not install with `uv sync --frozen --no-dev`",
        "Dockerfile: installs uv ['UV_VERSION=0.4.0'], the Makefile's is 0.13.9",
        "Dockerfile: `pip install --no-cache-dir grpcio==1.85.4` installs outside the lock",
        "Dockerfile: target pod-config runs as 'root', not a non-root numeric uid",
        "Dockerfile: target pod-config is built on ['uv'], where the build tools are",
        "Dockerfile: target pod-publish runs as 'root', not a non-root numeric uid",
        "Dockerfile: target pod-publish is built on ['uv'], where the build tools are",
    ]


@pytest.fixture(scope="module")
def pod_venv(tmp_path_factory, dockerfile):
    context = checks.uv_context(dockerfile, tmp_path_factory.mktemp("pod-context"))
    return checks.pod_venv(
        checks.REPO_ROOT / "deploy" / "pod-prune.txt", tmp_path_factory.mktemp("pod") / "venv", context
    )


@pytest.fixture(scope="module")
def dockerfile():
    return checks.Dockerfile.read(checks.REPO_ROOT / "deploy" / "Dockerfile")


@pytest.mark.parametrize("service", ["pod_config", "pod_publish"])
def test_a_pod_image_starts_its_program_with_only_what_it_imports(pod_venv, dockerfile, tmp_path, service):
    code = checks.image_code(dockerfile, service, tmp_path / "app")
    assert sorted(p.name for p in (code / "services").iterdir()) == ["__init__.py", service]
    # the image's entrypoint, without a job in its environment: the program runs and says what it lacks
    started = checks.run_in_image(pod_venv, code, "-m", f"services.{service}")
    assert (started.returncode, started.stderr.strip()) == (
        2,
        f"{service}: environment variable 'C2D_JOB_ID' is required",
    )
    installed = {p.name.split("-")[0].lower() for p in (pod_venv / "lib").glob("python3*/site-packages/*.dist-info")}
    assert {"grpcio", "minio", "protobuf"} <= installed
    assert not installed & {"sqlalchemy", "kubernetes", "eth_account", "psycopg2_binary"}


def test_a_pod_image_without_a_package_its_program_imports_fails_to_start(tmp_path, dockerfile):
    prune = tmp_path / "pod-prune.txt"
    prune.write_text((checks.REPO_ROOT / "deploy" / "pod-prune.txt").read_text() + "minio\n")
    venv = checks.pod_venv(prune, tmp_path / "venv", checks.uv_context(dockerfile, tmp_path / "context"))
    started = checks.run_in_image(
        venv, checks.image_code(dockerfile, "pod_publish", tmp_path / "app"), "-m", "services.pod_publish"
    )
    # plumbing.storage imports minio (result links, S3) whatever the storage kind
    assert started.returncode == 1
    assert started.stderr.strip().endswith("ModuleNotFoundError: No module named 'minio'")


@pytest.fixture(scope="module")
def server_venv(tmp_path_factory, dockerfile):
    context = checks.uv_context(dockerfile, tmp_path_factory.mktemp("server-context"))
    return checks.server_venv(tmp_path_factory.mktemp("server") / "venv", context)


@pytest.mark.parametrize("service", sorted(SERVER_MODULES))
def test_a_server_image_imports_its_server_with_its_own_code_only(server_venv, dockerfile, tmp_path, service):
    code = checks.image_code(dockerfile, service, tmp_path / "app")
    assert sorted(p.name for p in (code / "services").iterdir()) == ["__init__.py", service]
    imported = checks.run_in_image(server_venv, code, "-c", f"import {SERVER_MODULES[service]}")
    assert imported.returncode == 0, imported.stderr
