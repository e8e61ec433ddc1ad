"""The operator's pure decisions: what to write, what status to report."""

from __future__ import annotations

import base64
import copy

from sotadb import names
from sotadb.credentials import Credentials
from sotadb.kube import status
from sotadb.kube.observe import Observed, instance_key, observe
from sotadb.kube.reconcile import keep_immutable_claims, plan_writes
from sotadb.render import render_objects
from sotadb.render.meta import spec_hash
from sotadb.spec import parse_database

CREDENTIALS = Credentials.generate()


def make_db(spec=None, name="my-app"):
    return parse_database(
        {
            "apiVersion": "sota.io/v1",
            "kind": "ManagedDatabase",
            "metadata": {"name": name, "namespace": "shop", "uid": "u-1"},
            "spec": spec or {},
        }
    )


def as_observed(objects):
    return Observed.of(observe(o) for o in objects)


def test_nothing_observed_means_everything_is_written():
    desired = render_objects(make_db(), CREDENTIALS)
    assert plan_writes(desired, Observed.of([])) == desired


def test_an_unchanged_world_needs_no_write():
    desired = render_objects(make_db(), CREDENTIALS)
    # The API adds fields (status, resourceVersion); only our hash annotation matters.
    served = copy.deepcopy(desired)
    for document in served:
        document["metadata"]["resourceVersion"] = "42"
        document["status"] = {"observed": True}
    assert plan_writes(desired, as_observed(served)) == []


def test_only_changed_objects_are_written():
    before = render_objects(make_db(), CREDENTIALS)
    after = render_objects(make_db({"pool": {"defaultPoolSize": 30}}), CREDENTIALS)
    written = {(o["kind"], o["metadata"]["name"]) for o in plan_writes(after, as_observed(before))}
    assert written == {
        ("ConfigMap", "sota-pgbouncer-my-app-config"),
        ("Deployment", "sota-pgbouncer-my-app"),
    }


def test_an_object_being_deleted_is_written_again():
    desired = render_objects(make_db(), CREDENTIALS)
    served = copy.deepcopy(desired)
    served[0]["metadata"]["deletionTimestamp"] = "2026-11-25T00:00:00Z"
    assert plan_writes(desired, as_observed(served)) == [desired[0]]


def test_statefulset_keeps_its_observed_claim_templates():
    small = render_objects(make_db(), CREDENTIALS)
    big = render_objects(make_db({"storage": {"size": "5Gi"}}), CREDENTIALS)
    observed = as_observed(small)
    statefulset = next(o for o in big if o["kind"] == "StatefulSet")
    kept = keep_immutable_claims(statefulset, observed)
    claim = kept["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    # Keeping the running claims of an unchanged StatefulSet is a no-op: same hash, no write.
    running = next(o for o in small if o["kind"] == "StatefulSet")
    assert spec_hash(keep_immutable_claims(running, observed)) == spec_hash(running)


def test_observe_decodes_secrets_and_reads_readiness():
    secret = {
        "kind": "Secret",
        "metadata": {"name": "s", "namespace": "shop", "ownerReferences": [{"uid": "u-1"}]},
        "data": {"PGPASSWORD": base64.b64encode(b"f" * 32).decode(), "bad": "%%%"},
    }
    snapshot = observe(secret)
    assert snapshot.data == {"PGPASSWORD": "f" * 32}
    assert snapshot.owner_uids == ("u-1",)
    assert "f" * 32 not in repr(snapshot)
    workload = {"kind": "StatefulSet", "metadata": {"name": "w"}, "status": {"readyReplicas": 1}}
    assert observe(workload).ready_replicas == 1


def test_instance_key_accepts_only_our_objects():
    labels = names.common_labels("my-app", names.COMPONENT_POSTGRES)
    ours = {"metadata": {"namespace": "shop", "labels": labels}}
    assert instance_key(ours) == ("shop", "my-app")
    foreign = {"metadata": {"namespace": "shop", "labels": {names.LABEL_INSTANCE: "x"}}}
    assert instance_key(foreign) is None


def ready_world(slug="my-app"):
    objects = copy.deepcopy(render_objects(make_db(name=slug), CREDENTIALS))
    for document in objects:
        if document["kind"] in ("StatefulSet", "Deployment"):
            document["status"] = {"readyReplicas": 1}
    return as_observed(objects)


def test_ready_when_both_workloads_have_a_ready_replica_and_backups_are_scheduled():
    conditions = status.workload_conditions("my-app", ready_world(), backups_enabled=True)
    by_type = {c.type: c for c in conditions}
    assert by_type["Ready"].status
    assert by_type["PostgresReady"].status
    assert by_type["PoolerReady"].status
    assert by_type["BackupsScheduled"].status
    assert "sota-db-my-app-app" in by_type["Ready"].message


def test_not_ready_says_what_it_waits_for():
    conditions = status.workload_conditions("my-app", Observed.of([]), backups_enabled=True)
    ready = conditions[0]
    assert not ready.status
    assert ready.reason == "Provisioning"
    assert "StatefulSet sota-db-my-app does not exist yet" in ready.message
    assert "Deployment sota-pgbouncer-my-app" in ready.message


def test_disabled_backups_do_not_block_readiness():
    conditions = status.workload_conditions("my-app", ready_world(), backups_enabled=False)
    by_type = {c.type: c for c in conditions}
    assert by_type["Ready"].status
    assert by_type["BackupsScheduled"].reason == "Disabled"


def test_status_patch_is_empty_when_nothing_changed():
    conditions = status.workload_conditions("my-app", ready_world(), backups_enabled=True)
    first = status.status_patch(
        current={}, phase="Ready", conditions=conditions, generation=3, secret_name="s", now="T1"
    )
    assert first["phase"] == "Ready"
    assert first["observedGeneration"] == 3
    assert all(c["lastTransitionTime"] == "T1" for c in first["conditions"])
    again = status.status_patch(
        current=first, phase="Ready", conditions=conditions, generation=3, secret_name="s", now="T2"
    )
    assert again == {}


def test_transition_time_moves_only_when_a_condition_flips():
    ready = status.workload_conditions("my-app", ready_world(), backups_enabled=True)
    first = status.status_patch(
        current={}, phase="Ready", conditions=ready, generation=1, secret_name="s", now="T1"
    )
    waiting = status.workload_conditions("my-app", Observed.of([]), backups_enabled=True)
    second = status.status_patch(
        current=first,
        phase="Provisioning",
        conditions=waiting,
        generation=1,
        secret_name="s",
        now="T2",
    )
    times = {c["type"]: c["lastTransitionTime"] for c in second["conditions"]}
    assert times["Ready"] == "T2"
    assert times["PostgresReady"] == "T2"
