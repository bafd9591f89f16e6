"""An emulated API server (and a test kubelet) per test, with clients for it."""

from __future__ import annotations

from collections.abc import Iterator

import kubernetes.client
import pytest

from testkit import kube


@pytest.fixture
def api() -> Iterator[kube.ApiServer]:
    with kube.ApiServer() as server:
        yield server


@pytest.fixture
def core(api: kube.ApiServer) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api.api_client())


@pytest.fixture
def custom(api: kube.ApiServer) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api.api_client())


@pytest.fixture
def kubelet(api: kube.ApiServer, tmp_path) -> Iterator[kube.Kubelet]:
    with kube.Kubelet(api, tmp_path / "node") as node:
        yield node
