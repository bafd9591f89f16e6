import fcntl
import os

import pytest

from tests.sdk_typescript.node import DIST, build_sdk


@pytest.fixture(scope="session", autouse=True)
def compiled_sdk(tmp_path_factory):
    """The SDK compiled from its current sources before any test here runs: once
    per run, as xdist's workers share dist/ (one compiling while another runs
    its scripts would read half-written files)."""
    run_dir = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        run_dir = run_dir.parent  # the workers' common base
    with open(run_dir / "sdk-ts.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = run_dir / "sdk-ts.built"
        if not built.exists():
            build_sdk()
            built.touch()
    return DIST
