"""skaffold.yaml: valid against the shared schema, its paths and targets real."""

from __future__ import annotations

import re

import pytest

from tests.deploy import checks
from tests.deploy.conftest import edit


def test_skaffold_yaml_validates_against_the_v4beta14_schema(skaffold, skaffold_schema):
    assert checks.skaffold_schema_problems(skaffold, skaffold_schema) == []
    assert checks.skaffold_header_problems(skaffold) == []


def test_a_schema_violation_is_named_where_it_is(broken, skaffold_schema):
    edit(broken / "skaffold.yaml", "target: provider", "target: provider\n        targett: provider")
    problems = checks.skaffold_schema_problems(checks.load_yaml(broken / "skaffold.yaml"), skaffold_schema)
    assert problems == [".build.artifacts[0].docker: Additional properties are not allowed ('targett' was unexpected)"]


def test_a_wrong_api_version_or_kind_is_refused(broken):
    edit(broken / "skaffold.yaml", "apiVersion: skaffold/v4beta14", "apiVersion: skaffold/v4beta13")
    edit(broken / "skaffold.yaml", "kind: Config", "kind: Configuration")
    assert checks.skaffold_header_problems(checks.load_yaml(broken / "skaffold.yaml")) == [
        "apiVersion is 'skaffold/v4beta13', expected 'skaffold/v4beta14'",
        "kind is 'Configuration', expected 'Config'",
    ]


def test_the_schema_is_found_beside_the_checkout_and_its_absence_fails(tmp_path):
    assert checks.shared_schema().parts[-3:] == ("shared", "schemas", "skaffold-v4beta14.json")
    with pytest.raises(AssertionError, match="the skaffold schema is missing"):
        checks.shared_schema(tmp_path / "elsewhere" / "repo")


def test_every_dockerfile_and_kustomize_path_exists(skaffold):
    assert checks.kustomize_paths(skaffold) == ["deploy/overlays/minikube", "deploy/overlays/minikube-s3"]
    assert checks.skaffold_path_problems(checks.REPO_ROOT, skaffold) == []


def test_a_missing_dockerfile_profile_overlay_or_kustomize_file_is_named(broken):
    edit(broken / "skaffold.yaml", "dockerfile: deploy/Dockerfile", "dockerfile: deploy/Dockerfile.provider")
    edit(broken / "skaffold.yaml", "value: deploy/overlays/minikube-s3", "value: deploy/overlays/s3")
    (broken / "deploy" / "base" / "results-volume.yaml").unlink()
    problems = checks.skaffold_path_problems(broken, checks.load_yaml(broken / "skaffold.yaml"))
    assert problems == [
        "artifact c2d-provider: no Dockerfile at deploy/Dockerfile.provider",
        "deploy/base/kustomization.yaml names results-volume.yaml, which does not exist",
        "kustomize path deploy/overlays/s3 has no kustomization.yaml",
    ]


def test_each_artifact_builds_its_own_target_with_its_own_code(skaffold):
    targets = {a["image"]: a["docker"]["target"] for a in skaffold["build"]["artifacts"]}
    assert targets == {
        "c2d-provider": "provider",
        "c2d-operator-service": "operator-service",
        "c2d-operator-engine": "operator-engine",
        "c2d-pod-config": "pod-config",
        "c2d-pod-publish": "pod-publish",
    }
    assert checks.artifact_problems(checks.REPO_ROOT, skaffold) == []


def test_an_artifact_with_a_missing_target_or_another_services_code_is_named(broken):
    edit(broken / "skaffold.yaml", "target: pod-publish", "target: pod-publisher")
    edit(broken / "skaffold.yaml", "SERVICE: operator_engine", "SERVICE: operator_service")
    assert checks.artifact_problems(broken, checks.load_yaml(broken / "skaffold.yaml")) == [
        "artifact c2d-operator-engine: SERVICE='operator_service' is not the code of target 'operator-engine'",
        "artifact c2d-pod-publish: the Dockerfile has no target 'pod-publisher'",
        "artifact c2d-pod-publish: SERVICE='pod_publish' is not the code of target 'pod-publisher'",
    ]


def test_profiles_minikube_by_context_and_s3_by_name_and_the_provider_port_forwarded(skaffold, rendered):
    profiles = {p["name"]: p for p in skaffold["profiles"]}
    assert profiles["minikube"]["activation"] == [{"kubeContext": "minikube"}]
    assert {"op": "add", "path": "/deploy/kubeContext", "value": "minikube"} in profiles["minikube"]["patches"]
    assert profiles["s3"]["patches"] == [
        {"op": "replace", "path": "/manifests/kustomize/paths/0", "value": "deploy/overlays/minikube-s3"}
    ]
    assert skaffold["deploy"] == {"kubectl": {}}
    (forward,) = skaffold["portForward"]
    service = checks.find(rendered["deploy/overlays/minikube"], "Service", forward["resourceName"])
    assert forward["resourceType"] == "service" and service is not None
    assert forward["namespace"] == service["metadata"]["namespace"] == "c2d"
    assert forward["port"] == forward["localPort"] == 50051
    assert [p["port"] for p in service["spec"]["ports"]] == [50051]


def test_skaffold_watches_only_its_own_service_folder_per_artifact(skaffold):
    """skaffold rebuilds an artifact when a file its Dockerfile copies changes:
    with SERVICE expanded, each image copies only its own services/ folder."""
    dockerfile = checks.Dockerfile.read(checks.REPO_ROOT / "deploy" / "Dockerfile")
    copied = [
        a for s in dockerfile.stages.values() for i, a in s.instructions if i == "COPY" and not a.startswith("--from")
    ]
    service_copies = [a for a in copied if a.startswith("services/") and not a.startswith("services/__init__")]
    assert service_copies == ["services/${SERVICE}/ /app/services/${SERVICE}/"]
    for artifact in skaffold["build"]["artifacts"]:
        assert set(artifact["docker"]["buildArgs"]) == {"SERVICE"}


def test_the_build_context_holds_what_the_dockerfile_copies(skaffold):
    assert checks.dockerignore_problems(checks.REPO_ROOT, skaffold) == []


def test_a_copied_file_left_out_of_the_context_is_named(broken):
    edit(broken / ".dockerignore", "!plumbing/\n", "")
    assert checks.dockerignore_problems(broken, checks.load_yaml(broken / "skaffold.yaml")) == [
        "Dockerfile copies plumbing, which .dockerignore leaves out of the context"
    ]


def readme_minikube_section() -> str:
    readme = (checks.REPO_ROOT / "README.md").read_text()
    return readme.split("## Run on minikube", 1)[1].split("\n## ", 1)[0]


def test_the_readme_minikube_section_matches_the_files(skaffold):
    section = readme_minikube_section()
    for path in sorted(set(re.findall(r"`(deploy/[^`\s]*)`", section))):
        assert (checks.REPO_ROOT / path).exists(), f"the README names {path}, which does not exist"
    profiles = {p["name"] for p in skaffold["profiles"]}
    assert set(re.findall(r"skaffold \w+ -p (\w+)", section)) <= profiles
    assert (
        "`skaffold dev`" in section and "minikube start" in section and "grpcurl -plaintext localhost:50051" in section
    )
    engine_variables = set(re.findall(r"`(C2D_ENGINE_K8S_\w+)`", section))
    assert engine_variables and engine_variables <= set(checks.ENGINE_K8S_VARIABLES)
