"""Every manifest in deploy/ against the Kubernetes 1.30 schemas, strict, and what the CRD and RBAC promise."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from testkit.kube import manifests, rbac, validation

DOCUMENTS = [(path, index, doc) for path in manifests.files() for index, doc in enumerate(manifests.objects(path))]


def test_deploy_holds_the_engine_rbac_and_the_crd():
    names = {path.relative_to(manifests.DEPLOY).as_posix() for path, _, _ in DOCUMENTS}
    assert {"base/computejob-crd.yaml", "base/engine-rbac.yaml"} <= names


@pytest.mark.parametrize(
    "doc",
    [doc for _, _, doc in DOCUMENTS],
    ids=[f"{path.name}#{index}-{doc['kind']}" for path, index, doc in DOCUMENTS],
)
def test_every_manifest_validates_strictly_against_kubernetes_1_30(doc):
    assert kubernetes_validate.validate(doc, "1.30.0", strict=True) == "1.30"


def test_an_invalid_manifest_is_refused():
    role = copy.deepcopy(next(doc for _, _, doc in DOCUMENTS if doc["kind"] == "Role"))
    role["rules"][0]["verb"] = role["rules"][0].pop("verbs")  # a typo
    crd = copy.deepcopy(next(doc for _, _, doc in DOCUMENTS if doc["kind"] == "CustomResourceDefinition"))
    crd["spec"]["version"] = "v1"  # a v1beta1 field, gone from apiextensions/v1

    with pytest.raises(
        kubernetes_validate.ValidationError, match="'verbs' is a required property|'verb' was unexpected"
    ):
        kubernetes_validate.validate(role, "1.30.0", strict=True)
    with pytest.raises(kubernetes_validate.ValidationError, match="'version' was unexpected"):
        kubernetes_validate.validate(crd, "1.30.0", strict=True)


def test_kustomize_renders_the_base():
    rendered = manifests.rendered(manifests.DEPLOY_BASE)

    in_base = [doc for path, _, doc in DOCUMENTS if path.parent == manifests.DEPLOY_BASE]
    assert set(manifests.kinds(in_base)) <= set(manifests.kinds(rendered))
    for obj in rendered:
        manifests.validate(obj)


def test_compute_jobs_are_checked_against_their_crd():
    job = {
        "apiVersion": "c2d.dev/v1",
        "kind": "ComputeJob",
        "metadata": {"name": "job-1", "namespace": "c2d"},
        "spec": {"jobId": "1", "environmentId": "env"},
        "status": {"status": 41, "stage": "algorithm", "endReason": "Failed", "errorCode": "algorithm_failed"},
    }
    manifests.validate(job)

    with pytest.raises(validation.Invalid, match="status.status"):
        manifests.validate(dict(job, status={"status": 43}))
    with pytest.raises(validation.Invalid, match="status.endReason"):
        manifests.validate(dict(job, status={"endReason": "Exploded"}))
    with pytest.raises(manifests.UnknownKind):
        manifests.validate(dict(job, kind="ComputeJobs"))


def crd_version() -> dict:
    crd = next(doc for _, _, doc in DOCUMENTS if doc["kind"] == "CustomResourceDefinition")
    return crd["spec"]["versions"][0]


def test_the_crd_mirrors_the_job_state_in_its_status_and_printer_columns():
    version = crd_version()
    schema = version["schema"]["openAPIV3Schema"]
    columns = {column["name"]: column["jsonPath"] for column in version["additionalPrinterColumns"]}

    assert version["subresources"] == {"status": {}}
    assert columns == {
        "Job": ".spec.jobId",
        "Status": ".status.status",
        "Text": ".status.statusText",
        "Stage": ".status.stage",
        "End": ".status.endReason",
        "Error": ".status.errorCode",
        "Age": ".metadata.creationTimestamp",
    }
    for path in (path for path in columns.values() if not path.startswith(".metadata")):
        node = schema
        for part in path.strip(".").split("."):
            node = node["properties"][part]  # a column shows a field the schema declares
    ocean = [1, 10, 20, 30, 31, 32, 40, 41, 42, 50, 60, 61, 62, 70]
    assert schema["properties"]["status"]["properties"]["status"]["enum"] == ocean


# What the kubernetes backend calls in its namespace (test_engine_kubernetes.py checks
# the calls it makes are these, and only these).
ENGINE_CALLS = {
    ("c2d.dev", "computejobs", "create"),
    ("c2d.dev", "computejobs", "get"),
    ("c2d.dev", "computejobs", "list"),
    ("c2d.dev", "computejobs", "delete"),
    ("c2d.dev", "computejobs/status", "patch"),
    ("c2d.dev", "computejobs/finalizers", "update"),
    ("", "pods", "create"),
    ("", "pods", "list"),
    ("", "pods", "watch"),
    ("", "pods", "delete"),
    ("", "pods/log", "get"),
    ("", "persistentvolumeclaims", "create"),
    ("", "secrets", "create"),
    ("", "secrets", "patch"),
    ("networking.k8s.io", "networkpolicies", "create"),
}


def allowed(role: dict, verb: str, resource: str, group: str = "") -> bool:
    return rbac.rules_allow(role["rules"], rbac.Attributes(verb, group, resource, "c2d", None))


def test_the_engine_role_grants_what_the_backend_uses_and_nothing_more():
    role = next(doc for _, _, doc in DOCUMENTS if doc["kind"] == "Role")
    cluster = next(doc for _, _, doc in DOCUMENTS if doc["kind"] == "ClusterRole")

    grants = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert grants == ENGINE_CALLS
    refused = [("get", "secrets"), ("list", "secrets"), ("watch", "secrets"), ("create", "pods/exec")]
    refused += [("update", "pods"), ("patch", "pods"), ("deletecollection", "pods"), ("create", "roles")]
    for verb, resource in refused:
        assert not allowed(role, verb, resource), (verb, resource)
    assert all(
        "*" not in rule[key] for rule in role["rules"] + cluster["rules"] for key in ("verbs", "resources", "apiGroups")
    )
    assert [(rule["resources"], rule["verbs"]) for rule in cluster["rules"]] == [
        (["storageclasses"], ["get"]),
        (["nodes"], ["list"]),
    ]


def test_job_pods_get_an_identity_without_a_token():
    accounts = {doc["metadata"]["name"]: doc for _, _, doc in DOCUMENTS if doc["kind"] == "ServiceAccount"}
    bindings = [doc for _, _, doc in DOCUMENTS if doc["kind"] in ("RoleBinding", "ClusterRoleBinding")]

    assert accounts["c2d-job"]["automountServiceAccountToken"] is False
    assert all(subject["name"] == "c2d-operator-engine" for binding in bindings for subject in binding["subjects"])
