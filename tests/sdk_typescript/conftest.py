import pytest

from tests.sdk_typescript.node import build_sdk


@pytest.fixture(scope="session", autouse=True)
def compiled_sdk():
    """The SDK compiled from its current sources before any test here runs."""
    return build_sdk()
