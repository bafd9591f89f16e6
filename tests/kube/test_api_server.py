"""The emulated API server, through the official client over real HTTP."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import kmock
import kubernetes.client
import kubernetes.config
import pytest
from kubernetes import watch
from kubernetes.client.rest import ApiException

from testkit import kube
from testkit.kube import manifests

from .helpers import compute_job, owner_reference, pod

NS = "c2d"


def raw(response) -> dict:
    return json.loads(response.data)


def api_error(call, *args, **kwargs) -> ApiException:
    with pytest.raises(ApiException) as caught:
        call(*args, **kwargs)
    return caught.value


def events(stream) -> list[tuple[str, str]]:
    return [(event["type"], event["raw_object"]["metadata"]["name"]) for event in stream]


# -- objects --------------------------------------------------------------------------------------


def test_create_stamps_identity_and_versions(core):
    first = core.create_namespaced_pod(NS, pod("a", ["true"]))
    second = core.create_namespaced_pod(NS, pod("b", ["true"]))

    assert first.metadata.uid and first.metadata.uid != second.metadata.uid
    assert first.metadata.creation_timestamp is not None
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
    assert first.status.phase == "Pending"
    fetched = core.read_namespaced_pod("a", NS)
    assert (fetched.metadata.uid, fetched.metadata.resource_version) == (
        first.metadata.uid,
        first.metadata.resource_version,
    )


def test_create_refuses_duplicates_unknown_namespaces_and_invalid_objects(core):
    core.create_namespaced_pod(NS, pod("a", ["true"]))

    assert api_error(core.create_namespaced_pod, NS, pod("a", ["true"])).status == 409
    assert api_error(core.create_namespaced_pod, "nowhere", pod("b", ["true"])).status == 404
    assert api_error(core.read_namespaced_pod, "absent", NS).status == 404

    bad_label = pod("c", ["true"], labels={"c2d.dev/did": "did:op:0123"})
    refused = api_error(core.create_namespaced_pod, NS, bad_label)
    assert refused.status == 422 and "metadata.labels[c2d.dev/did]" in refused.body
    assert api_error(core.create_namespaced_pod, NS, pod("Upper_Case", ["true"])).status == 422


def test_unknown_fields_are_refused_by_the_schema(api):
    # the typed client refuses them before sending: a client with no schema does not
    typo = pod("d", ["true"], container={"comand": ["x"]})
    request = urllib.request.Request(
        f"{api.url}/api/v1/namespaces/{NS}/pods", json.dumps(typo).encode(), {"Content-Type": "application/json"}
    )

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request)

    status = json.loads(refused.value.read())
    assert refused.value.code == 422 and status["reason"] == "Invalid"
    assert "'comand' was unexpected" in status["message"]


def test_generate_name_and_secret_string_data(core):
    created = core.create_namespaced_secret(
        NS, {"metadata": {"generateName": "token-"}, "stringData": {"token": "s3cret"}}
    )

    assert created.metadata.name.startswith("token-") and len(created.metadata.name) == len("token-") + 5
    assert created.data == {"token": "czNjcmV0"} and created.string_data is None and created.type == "Opaque"


def test_replace_needs_the_current_resource_version(core):
    created = raw(
        core.create_namespaced_config_map(NS, {"metadata": {"name": "cm"}, "data": {"a": "1"}}, _preload_content=False)
    )
    stale = dict(created, data={"a": "2"})
    updated = raw(core.replace_namespaced_config_map("cm", NS, stale, _preload_content=False))
    assert updated["data"] == {"a": "2"}
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])

    assert api_error(core.replace_namespaced_config_map, "cm", NS, dict(stale, data={"a": "3"})).status == 409
    unconditional = dict(updated, data={"a": "4"})
    del unconditional["metadata"]["resourceVersion"]
    assert core.replace_namespaced_config_map("cm", NS, unconditional).data == {"a": "4"}


def test_patch_formats(core):
    core.create_namespaced_config_map(
        NS, {"metadata": {"name": "cm", "labels": {"a": "1"}}, "data": {"k": "v", "x": "y"}}
    )

    merged = core.patch_namespaced_config_map("cm", NS, {"data": {"x": None, "n": "m"}})
    assert merged.data == {"k": "v", "n": "m"}
    patched = core.patch_namespaced_config_map("cm", NS, [{"op": "replace", "path": "/data/k", "value": "w"}])
    assert patched.data["k"] == "w"
    assert (
        api_error(core.patch_namespaced_config_map, "cm", NS, [{"op": "remove", "path": "/data/absent"}]).status == 422
    )

    before = patched.metadata.resource_version
    assert core.patch_namespaced_config_map("cm", NS, {"data": {"k": "w"}}).metadata.resource_version == before
    wrong_version = {"metadata": {"resourceVersion": "1"}, "data": {"k": "z"}}
    assert api_error(core.patch_namespaced_config_map, "cm", NS, wrong_version).status == 409


def test_strategic_merge_merges_conditions_by_type(core):
    core.create_namespaced_pod(NS, pod("p", ["true"]))
    ready = {"type": "Ready", "status": "False"}
    core.patch_namespaced_pod_status(
        "p", NS, {"status": {"conditions": [{"type": "PodScheduled", "status": "True"}, ready]}}
    )

    after = core.patch_namespaced_pod_status("p", NS, {"status": {"conditions": [{"type": "Ready", "status": "True"}]}})

    assert {c.type: c.status for c in after.status.conditions} == {"PodScheduled": "True", "Ready": "True"}


def test_pod_spec_is_immutable_but_for_the_deadline(core):
    core.create_namespaced_pod(NS, pod("p", ["true"]))

    assert core.patch_namespaced_pod("p", NS, {"spec": {"activeDeadlineSeconds": 5}}).spec.active_deadline_seconds == 5
    changed = api_error(core.patch_namespaced_pod, "p", NS, {"spec": {"restartPolicy": "Always"}})
    assert changed.status == 422 and "pod updates may not change fields" in changed.body


def test_status_subresource_is_written_only_through_status(core, custom):
    created = custom.create_namespaced_custom_object(
        "c2d.dev", "v1", NS, "computejobs", dict(compute_job("j"), status={"status": 70})
    )
    assert "status" not in created

    custom.patch_namespaced_custom_object("c2d.dev", "v1", NS, "computejobs", "j", {"status": {"status": 40}})
    assert "status" not in custom.get_namespaced_custom_object("c2d.dev", "v1", NS, "computejobs", "j")

    patched = custom.patch_namespaced_custom_object_status(
        "c2d.dev",
        "v1",
        NS,
        "computejobs",
        "j",
        {"status": {"status": 40, "stage": "algorithm"}, "spec": {"jobId": "other"}},
    )
    assert patched["status"] == {"status": 40, "stage": "algorithm"}
    assert patched["spec"]["jobId"] == "job-1"


def test_custom_resources_are_validated_and_pruned_by_their_crd(custom):
    created = custom.create_namespaced_custom_object(
        "c2d.dev", "v1", NS, "computejobs", dict(compute_job("j"), spec={"jobId": "a", "environmentId": "e", "typo": 1})
    )
    assert created["spec"] == {"jobId": "a", "environmentId": "e"}

    no_job = api_error(
        custom.create_namespaced_custom_object, "c2d.dev", "v1", NS, "computejobs", dict(compute_job("k"), spec={})
    )
    assert no_job.status == 422 and "'jobId' is a required property" in no_job.body
    not_ocean = api_error(
        custom.patch_namespaced_custom_object_status,
        "c2d.dev",
        "v1",
        NS,
        "computejobs",
        "j",
        {"status": {"status": 71}},
    )
    assert not_ocean.status == 422
    strategic = api_error(
        custom.patch_namespaced_custom_object,
        "c2d.dev",
        "v1",
        NS,
        "computejobs",
        "j",
        {"metadata": {"labels": {"a": "b"}}},
        _content_type="application/strategic-merge-patch+json",
    )
    assert strategic.status == 415


# -- selectors ----------------------------------------------------------------------------------


def test_label_and_field_selectors(core):
    core.create_namespaced_pod(NS, pod("config", ["true"], labels={"stage": "configure", "job": "1"}))
    core.create_namespaced_pod(NS, pod("algo", ["true"], labels={"stage": "algorithm", "job": "1"}))
    core.create_namespaced_pod(NS, pod("other", ["true"], labels={"stage": "algorithm", "job": "2", "keep": "yes"}))
    core.patch_namespaced_pod_status("algo", NS, {"status": {"phase": "Running"}})

    def names(**selectors) -> list[str]:
        return [p.metadata.name for p in core.list_namespaced_pod(NS, **selectors).items]

    assert names(label_selector="job=1") == ["algo", "config"]
    assert names(label_selector="job==1,stage!=configure") == ["algo"]
    assert names(label_selector="stage in (configure, algorithm),job notin (2)") == ["algo", "config"]
    assert names(label_selector="keep") == ["other"]
    assert names(label_selector="!keep") == ["algo", "config"]
    assert names(field_selector="status.phase=Running") == ["algo"]
    assert names(field_selector="metadata.name!=algo", label_selector="job=1") == ["config"]
    assert api_error(core.list_namespaced_pod, NS, label_selector="job in (").status == 400
    assert api_error(core.list_namespaced_pod, NS, field_selector="spec.containers=x").status == 400


# -- watches --------------------------------------------------------------------------------------


def test_watch_from_a_list_sees_only_later_changes_in_order(core):
    core.create_namespaced_pod(NS, pod("before", ["true"]))
    version = core.list_namespaced_pod(NS).metadata.resource_version
    core.create_namespaced_pod(NS, pod("after", ["true"]))
    core.patch_namespaced_pod("after", NS, {"metadata": {"labels": {"x": "1"}}})
    core.delete_namespaced_pod("after", NS)

    seen = watch.Watch().stream(core.list_namespaced_pod, NS, resource_version=version, timeout_seconds=1)

    assert events(seen) == [("ADDED", "after"), ("MODIFIED", "after"), ("DELETED", "after")]


def test_watch_resumes_from_the_last_version_seen(core):
    version = core.list_namespaced_pod(NS).metadata.resource_version
    for name in ("a", "b", "c"):
        core.create_namespaced_pod(NS, pod(name, ["true"]))
    first = next(iter(watch.Watch().stream(core.list_namespaced_pod, NS, resource_version=version, timeout_seconds=1)))
    resume_from = first["raw_object"]["metadata"]["resourceVersion"]

    rest = watch.Watch().stream(core.list_namespaced_pod, NS, resource_version=resume_from, timeout_seconds=1)

    assert first["raw_object"]["metadata"]["name"] == "a"
    assert events(rest) == [("ADDED", "b"), ("ADDED", "c")]


def test_watch_without_a_version_starts_with_what_exists(core):
    core.create_namespaced_pod(NS, pod("old", ["true"], labels={"app": "x"}))
    core.create_namespaced_pod(NS, pod("elsewhere", ["true"], labels={"app": "y"}))

    seen = watch.Watch().stream(core.list_namespaced_pod, NS, label_selector="app=x", timeout_seconds=1)

    assert events(seen) == [("ADDED", "old")]


def test_a_label_change_moves_an_object_out_of_and_into_a_selected_watch(core):
    core.create_namespaced_pod(NS, pod("p", ["true"], labels={"app": "x"}))
    version = core.list_namespaced_pod(NS).metadata.resource_version
    core.patch_namespaced_pod("p", NS, {"metadata": {"labels": {"app": "y"}}})
    core.patch_namespaced_pod("p", NS, {"metadata": {"labels": {"app": "x"}}})

    seen = watch.Watch().stream(
        core.list_namespaced_pod, NS, resource_version=version, label_selector="app=x", timeout_seconds=1
    )

    assert events(seen) == [("DELETED", "p"), ("ADDED", "p")]


def test_watch_timeout_ends_the_stream_with_a_bookmark(core):
    version = core.list_namespaced_pod(NS).metadata.resource_version
    core.create_namespaced_config_map(NS, {"metadata": {"name": "unrelated"}})
    started = time.monotonic()

    seen = list(
        watch.Watch().stream(
            core.list_namespaced_pod,
            NS,
            resource_version=version,
            timeout_seconds=1,
            allow_watch_bookmarks=True,
            _request_timeout=10,
        )
    )

    assert 0.9 <= time.monotonic() - started < 5  # ended by the server, long before _request_timeout
    assert [event["type"] for event in seen] == ["BOOKMARK"]
    assert int(seen[0]["raw_object"]["metadata"]["resourceVersion"]) > int(version)


def test_request_timeout_bounds_a_quiet_watch_on_the_client(core):
    version = core.list_namespaced_pod(NS).metadata.resource_version
    started = time.monotonic()

    with pytest.raises(Exception, match="[Rr]ead timed out"):
        list(watch.Watch().stream(core.list_namespaced_pod, NS, resource_version=version, _request_timeout=(5, 1)))
    assert time.monotonic() - started < 5


def test_an_open_watch_gets_410_when_the_server_expires_versions(api, core):
    version = core.list_namespaced_pod(NS).metadata.resource_version
    outcome: list[object] = []

    def consume() -> None:
        try:
            outcome.extend(
                watch.Watch().stream(core.list_namespaced_pod, NS, resource_version=version, timeout_seconds=10)
            )
        except ApiException as exc:
            outcome.append(exc)

    watcher = threading.Thread(target=consume)
    watcher.start()
    time.sleep(0.3)  # let the watch open (an expiry before it would be a too-old resume instead)
    api.expire_watches()
    watcher.join(5)

    assert not watcher.is_alive()
    assert isinstance(outcome[-1], ApiException) and outcome[-1].status == 410


def test_resuming_from_an_expired_version_is_410_and_a_new_list_recovers(api, core):
    old = core.list_namespaced_pod(NS).metadata.resource_version
    core.create_namespaced_pod(NS, pod("a", ["true"]))
    api.expire_watches()

    gone = api_error(
        lambda: list(watch.Watch().stream(core.list_namespaced_pod, NS, resource_version=old, timeout_seconds=1))
    )
    assert gone.status == 410 and "too old resource version" in gone.reason

    fresh = core.list_namespaced_pod(NS)
    core.create_namespaced_pod(NS, pod("b", ["true"]))
    seen = watch.Watch().stream(
        core.list_namespaced_pod, NS, resource_version=fresh.metadata.resource_version, timeout_seconds=1
    )
    assert [p.metadata.name for p in fresh.items] == ["a"]
    assert events(seen) == [("ADDED", "b")]


def test_versions_older_than_the_history_window_expire_by_themselves():
    with kube.ApiServer(history_window=2) as api:
        core = kubernetes.client.CoreV1Api(api.api_client())
        old = core.list_namespaced_pod(NS).metadata.resource_version
        for index in range(5):
            core.create_namespaced_config_map(NS, {"metadata": {"name": f"cm-{index}"}})

        gone = api_error(
            lambda: list(
                watch.Watch().stream(core.list_namespaced_config_map, NS, resource_version=old, timeout_seconds=1)
            )
        )
        assert gone.status == 410


# -- deletion -------------------------------------------------------------------------------------


def owned_objects(core, networking, owner) -> None:
    reference = [owner_reference(owner)]
    core.create_namespaced_pod(
        NS, dict(pod("job-pod", ["true"]), metadata={"name": "job-pod", "ownerReferences": reference})
    )
    core.create_namespaced_secret(
        NS, {"metadata": {"name": "job-token", "ownerReferences": reference}, "stringData": {"t": "x"}}
    )
    claim = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    core.create_namespaced_persistent_volume_claim(
        NS, {"metadata": {"name": "job-data", "ownerReferences": reference}, "spec": claim}
    )
    policy = {"podSelector": {}, "policyTypes": ["Egress"]}
    networking.create_namespaced_network_policy(
        NS, {"metadata": {"name": "job-net", "ownerReferences": reference}, "spec": policy}
    )


def remaining(core, networking) -> list[str]:
    return sorted(
        [p.metadata.name for p in core.list_namespaced_pod(NS).items]
        + [s.metadata.name for s in core.list_namespaced_secret(NS).items]
        + [c.metadata.name for c in core.list_namespaced_persistent_volume_claim(NS).items]
        + [n.metadata.name for n in networking.list_namespaced_network_policy(NS).items]
    )


def eventually(check, timeout: float = 5):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the garbage collector did not get there"
        time.sleep(0.02)


def test_deleting_a_compute_job_deletes_what_it_owns(api, core, custom):
    networking = kubernetes.client.NetworkingV1Api(api.api_client())
    owner = custom.create_namespaced_custom_object("c2d.dev", "v1", NS, "computejobs", compute_job("j"))
    owned_objects(core, networking, owner)
    assert remaining(core, networking) == ["job-data", "job-net", "job-pod", "job-token"]

    deleted = custom.delete_namespaced_custom_object("c2d.dev", "v1", NS, "computejobs", "j")

    assert deleted["metadata"]["name"] == "j"
    eventually(lambda: remaining(core, networking) == [])


def test_orphan_propagation_keeps_the_dependents_without_their_owner(api, core, custom):
    networking = kubernetes.client.NetworkingV1Api(api.api_client())
    owner = custom.create_namespaced_custom_object("c2d.dev", "v1", NS, "computejobs", compute_job("j"))
    owned_objects(core, networking, owner)

    custom.delete_namespaced_custom_object("c2d.dev", "v1", NS, "computejobs", "j", propagation_policy="Orphan")

    time.sleep(0.2)  # give a wrong garbage collection the time to happen
    assert remaining(core, networking) == ["job-data", "job-net", "job-pod", "job-token"]
    assert core.read_namespaced_pod("job-pod", NS).metadata.owner_references is None


def test_foreground_deletion_removes_the_owner_after_its_dependents(api, core, custom):
    owner = custom.create_namespaced_custom_object("c2d.dev", "v1", NS, "computejobs", compute_job("j"))
    core.create_namespaced_config_map(NS, {"metadata": {"name": "dep", "ownerReferences": [owner_reference(owner)]}})
    version = core.list_namespaced_config_map(NS).metadata.resource_version

    custom.delete_namespaced_custom_object("c2d.dev", "v1", NS, "computejobs", "j", propagation_policy="Foreground")

    eventually(lambda: not custom.list_namespaced_custom_object("c2d.dev", "v1", NS, "computejobs")["items"])
    dependent = list(
        watch.Watch().stream(core.list_namespaced_config_map, NS, resource_version=version, timeout_seconds=1)
    )
    owner_events = list(
        watch.Watch().stream(
            custom.list_namespaced_custom_object,
            "c2d.dev",
            "v1",
            NS,
            "computejobs",
            resource_version=version,
            timeout_seconds=1,
        )
    )
    assert [e["type"] for e in dependent] == ["DELETED"]
    assert [e["type"] for e in owner_events] == ["MODIFIED", "DELETED"]
    marked = owner_events[0]["raw_object"]["metadata"]
    assert marked["finalizers"] == ["foregroundDeletion"] and marked["deletionTimestamp"]
    dependent_gone = int(dependent[0]["raw_object"]["metadata"]["resourceVersion"])
    owner_gone = int(owner_events[1]["raw_object"]["metadata"]["resourceVersion"])
    assert int(marked["resourceVersion"]) < dependent_gone < owner_gone


def test_an_object_whose_owner_is_absent_is_collected(core):
    ghost = {"apiVersion": "c2d.dev/v1", "kind": "ComputeJob", "metadata": {"name": "gone", "uid": "no-such-uid"}}
    core.create_namespaced_config_map(NS, {"metadata": {"name": "stray", "ownerReferences": [owner_reference(ghost)]}})

    eventually(lambda: not core.list_namespaced_config_map(NS).items)


def test_a_pod_on_a_node_goes_only_when_its_kubelet_confirms(core):
    core.create_namespaced_pod(NS, pod("bound", ["true"]))
    core.create_namespaced_pod_binding(
        "bound", NS, {"metadata": {"name": "bound"}, "target": {"kind": "Node", "name": "n"}}, _preload_content=False
    )
    core.create_namespaced_pod(NS, pod("unbound", ["true"]))

    marked = core.delete_namespaced_pod("bound", NS)
    gone = core.delete_namespaced_pod("unbound", NS)

    assert marked.metadata.deletion_timestamp is not None and marked.metadata.deletion_grace_period_seconds == 30
    assert core.read_namespaced_pod("bound", NS).metadata.deletion_timestamp is not None
    assert gone.metadata.name == "unbound"
    assert [p.metadata.name for p in core.list_namespaced_pod(NS).items] == ["bound"]
    core.delete_namespaced_pod("bound", NS, grace_period_seconds=0)
    assert core.list_namespaced_pod(NS).items == []


def test_finalizers_hold_an_object_until_they_are_removed(core):
    core.create_namespaced_config_map(NS, {"metadata": {"name": "held", "finalizers": ["c2d.dev/logs"]}})

    answer = raw(core.delete_namespaced_config_map("held", NS, _preload_content=False))

    assert answer["kind"] == "ConfigMap" and answer["metadata"]["deletionTimestamp"]  # not a Status: not gone yet
    assert core.read_namespaced_config_map("held", NS).metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("held", NS, {"metadata": {"finalizers": None}})
    assert api_error(core.read_namespaced_config_map, "held", NS).status == 404


def test_deleting_what_is_gone_at_once_answers_a_status(core):
    core.create_namespaced_config_map(NS, {"metadata": {"name": "plain"}})

    answer = raw(core.delete_namespaced_config_map("plain", NS, _preload_content=False))

    assert (answer["kind"], answer["status"], answer["details"]["name"]) == ("Status", "Success", "plain")


def test_delete_collection_with_a_selector(core):
    for name, job in (("a", "1"), ("b", "1"), ("c", "2")):
        core.create_namespaced_config_map(NS, {"metadata": {"name": name, "labels": {"job": job}}})

    core.delete_collection_namespaced_config_map(NS, label_selector="job=1")

    assert [c.metadata.name for c in core.list_namespaced_config_map(NS).items] == ["c"]


# -- logs -------------------------------------------------------------------------------------------


def test_pod_log_is_plain_text_with_tail_and_follow(api, core, tmp_path):
    created = core.create_namespaced_pod(NS, pod("p", ["true"]))
    assert api_error(core.read_namespaced_pod_log, "p", NS).status == 400  # not started yet
    log_file = tmp_path / "main.log"
    log_file.write_text("one\ntwo\n")
    log = api.pod_logs.started(NS, "p", created.metadata.uid, "main", log_file)

    response = core.read_namespaced_pod_log("p", NS, _preload_content=False)
    assert response.headers["Content-Type"].startswith("text/plain")
    assert core.read_namespaced_pod_log("p", NS) == "one\ntwo\n"
    assert core.read_namespaced_pod_log("p", NS, tail_lines=1) == "two\n"

    def grow() -> None:
        time.sleep(0.3)
        with log_file.open("a") as stream:
            stream.write("three\n")
        log.finished.set()

    threading.Thread(target=grow).start()
    followed = list(watch.Watch().stream(core.read_namespaced_pod_log, "p", NS, _request_timeout=10))
    assert followed == ["one", "two", "three"]

    core.delete_namespaced_pod("p", NS)
    assert api_error(core.read_namespaced_pod_log, "p", NS).status == 404


# -- authorization ------------------------------------------------------------------------------------


def test_service_account_requests_are_held_to_the_engine_role(api):
    api.apply(manifests.load(manifests.DEPLOY_BASE / "engine-rbac.yaml"))
    token = api.token_for("c2d", "c2d-operator-engine")
    engine = kubernetes.client.CoreV1Api(api.api_client(token=token))
    storage = kubernetes.client.StorageV1Api(api.api_client(token=token))
    authorization = kubernetes.client.AuthorizationV1Api(api.api_client(token=token))

    engine.create_namespaced_pod(NS, pod("p", ["true"]))
    engine.create_namespaced_secret(NS, {"metadata": {"name": "s"}, "stringData": {"t": "x"}})
    assert engine.list_node().items == []
    assert storage.read_storage_class("standard").metadata.name == "standard"

    read_secret = api_error(engine.read_namespaced_secret, "s", NS)
    assert read_secret.status == 403
    assert json.loads(read_secret.body)["message"] == (
        'secrets is forbidden: User "system:serviceaccount:c2d:c2d-operator-engine" cannot get resource "secrets" '
        'in API group "" in the namespace "c2d"'
    )
    assert api_error(engine.create_namespaced_pod, "default", pod("q", ["true"])).status == 403
    assert api_error(engine.delete_namespaced_persistent_volume_claim, "x", "default").status == 403
    review = {"spec": {"resourceAttributes": {"namespace": "default", "verb": "create", "resource": "pods"}}}
    assert authorization.create_self_subject_access_review(review).status.allowed is False
    review["spec"]["resourceAttributes"]["namespace"] = NS
    assert authorization.create_self_subject_access_review(review).status.allowed is True
    stranger = kubernetes.client.CoreV1Api(api.api_client(token="not-issued"))
    assert api_error(stranger.list_namespaced_pod, NS).status == 401


def test_a_kubeconfig_carries_the_server_and_the_token(api, tmp_path):
    api.apply(manifests.load(manifests.DEPLOY_BASE / "engine-rbac.yaml"))
    path = api.write_kubeconfig(tmp_path / "config", token=api.token_for("c2d", "c2d-operator-engine"))
    client = kubernetes.config.new_client_from_config(str(path))
    engine = kubernetes.client.CoreV1Api(client)

    assert engine.list_namespaced_pod(NS).items == []
    assert api_error(engine.list_namespaced_secret, NS).status == 403


# -- the record and the rest -----------------------------------------------------------------------------


def test_calls_are_recorded_by_verb_resource_and_client(api, core):
    mark = api.mark()
    core.create_namespaced_pod(NS, pod("p", ["true"]))
    core.patch_namespaced_pod_status("p", NS, {"status": {"phase": "Running"}})
    core.list_namespaced_pod(NS)
    list(watch.Watch().stream(core.list_namespaced_pod, NS, timeout_seconds=1))
    kubelet_like = kubernetes.client.CoreV1Api(api.api_client(user_agent="testkit-kubelet"))
    kubelet_like.delete_namespaced_pod("p", NS)

    counted = kube.count(api.calls(mark, user_agent="OpenAPI-Generator"))

    assert counted == {("create", "pods"): 1, ("patch", "pods/status"): 1, ("list", "pods"): 1, ("watch", "pods"): 1}
    assert kube.count(api.calls(mark))[("delete", "pods")] == 1


def test_a_test_reaction_wins_over_the_emulation(api, core):
    api.run(lambda emulator: emulator["create pods"] << 503)

    assert api_error(core.create_namespaced_pod, NS, pod("p", ["true"])).status == 503
    assert core.list_namespaced_pod(NS).items == []


def test_version_and_namespaces(api, core):
    assert kubernetes.client.VersionApi(api.api_client()).get_code().minor == "30"
    core.create_namespace({"metadata": {"name": "jobs"}})
    assert sorted(n.metadata.name for n in core.list_namespace().items) == ["c2d", "default", "jobs"]
    assert core.read_namespace("jobs").status.phase == "Active"
    assert isinstance(api.emulator, kmock.KubernetesEmulator)
