"""The servers' metrics in the cluster: each pod says where Prometheus scrapes
it, on the port its METRICS_ADDRESS setting serves, and only a Prometheus in
the monitoring namespace reaches those ports (no job or algorithm pod)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy import checks
from tests.deploy.conftest import edit

METRICS_SETTINGS = {
    "c2d-provider": "C2D_PROVIDER_METRICS_ADDRESS",
    "c2d-operator-service": "C2D_OPERATOR_METRICS_ADDRESS",
    "c2d-operator-engine": "C2D_ENGINE_METRICS_ADDRESS",
}
OVERLAYS = pytest.mark.parametrize("overlay", checks.OVERLAYS)


def metrics_problems(objects: list[dict[str, Any]]) -> list[str]:
    problems = []
    for name, variable in METRICS_SETTINGS.items():
        workload = checks.find(objects, "Deployment", name)
        assert workload is not None, name
        container = checks.pod_spec(workload)["containers"][0]
        address = str(checks.environment(objects, container).get(variable, ""))
        host, _, port = address.rpartition(":")
        if host != "0.0.0.0" or not port.isdigit():
            problems.append(f"{name}: {variable}={address!r} does not listen on every interface")
            continue
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        wanted = {"prometheus.io/scrape": "true", "prometheus.io/port": port, "prometheus.io/path": "/metrics"}
        for key, value in wanted.items():
            if annotations.get(key) != value:
                problems.append(f"{name}: annotation {key}={annotations.get(key)!r}, not {value!r}")
        declared = {p.get("name"): p["containerPort"] for p in container.get("ports", ())}
        if declared.get("metrics") != int(port):
            problems.append(f"{name}: container port 'metrics' is {declared.get('metrics')}, not {port}")
        labels = checks.pod_labels(objects, "Deployment", name)
        for peer, allowed in ((checks.OUTSIDE, True), (checks.JOB_STAGE_POD, False), (checks.ALGORITHM_POD, False)):
            if checks.ingress_allowed(objects, labels, int(port), peer) != allowed:
                source = "the monitoring namespace" if peer.labels is None else f"a pod labelled {peer.labels}"
                problems.append(f"{name}: metrics port {port} is {'closed' if allowed else 'open'} to {source}")
    return problems


@OVERLAYS
def test_each_server_is_scraped_on_the_port_its_setting_serves(rendered, overlay):
    assert metrics_problems(rendered[overlay]) == []


def test_the_metrics_ports_are_open_to_the_monitoring_namespace_only(rendered):
    policy = checks.find(rendered["deploy/overlays/minikube"], "NetworkPolicy", "c2d-metrics-scrape")
    assert policy is not None
    [rule] = policy["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert sorted(p["port"] for p in rule["ports"]) == [9551, 9552, 9553]


def test_a_wrong_scrape_port_a_missing_container_port_or_an_open_metrics_port_is_named(broken):
    base = broken / "deploy" / "base"
    edit(base / "operator-engine.yaml", 'prometheus.io/port: "9553"', 'prometheus.io/port: "9999"')
    edit(base / "provider.yaml", "            - name: metrics\n              containerPort: 9551\n", "")
    edit(
        base / "network-policies.yaml",
        "        - namespaceSelector:\n            matchLabels:\n              kubernetes.io/metadata.name: monitoring\n",
        "        - namespaceSelector:\n            matchLabels:\n              kubernetes.io/metadata.name: monitoring\n"
        "        - podSelector: {}\n",
    )
    assert metrics_problems(checks.render(broken, "deploy/overlays/minikube")) == [
        "c2d-provider: container port 'metrics' is None, not 9551",
        "c2d-provider: metrics port 9551 is open to a pod labelled {'app.kubernetes.io/part-of': 'c2d', 'app.kubernetes.io/component': 'job'}",
        "c2d-provider: metrics port 9551 is open to a pod labelled {'app.kubernetes.io/component': 'algorithm'}",
        "c2d-operator-service: metrics port 9552 is open to a pod labelled {'app.kubernetes.io/part-of': 'c2d', 'app.kubernetes.io/component': 'job'}",
        "c2d-operator-service: metrics port 9552 is open to a pod labelled {'app.kubernetes.io/component': 'algorithm'}",
        "c2d-operator-engine: annotation prometheus.io/port='9999', not '9553'",
        "c2d-operator-engine: metrics port 9553 is open to a pod labelled {'app.kubernetes.io/part-of': 'c2d', 'app.kubernetes.io/component': 'job'}",
        "c2d-operator-engine: metrics port 9553 is open to a pod labelled {'app.kubernetes.io/component': 'algorithm'}",
    ]
