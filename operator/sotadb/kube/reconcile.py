"""One level-based reconcile of a ManagedDatabase: observe → render → compare → apply → report.

`plan_writes` is pure: it decides from hashes alone which rendered objects differ from what is
observed. `Reconciler.plan` renders and compares without I/O (the owned-object cache observed
everything already); `Reconciler.apply` writes only what differs and returns the status.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sotadb import names
from sotadb.credentials import Credentials, is_valid_password
from sotadb.kube import resources, status
from sotadb.kube.api import KubeApi
from sotadb.kube.observe import Observed, ObservedObject, observe
from sotadb.quantity import parse_quantity
from sotadb.render import Images, render_objects
from sotadb.render.meta import Manifest, manifest, spec_hash
from sotadb.render.pods import AUTH_VERIFIER_KEY
from sotadb.spec import DatabaseSpec, ManagedDatabase, check_update, parse_database

APPLIED_SPEC_FIELD = "appliedSpec"


@dataclass(frozen=True)
class Outcome:
    written: tuple[str, ...]  # "Kind/name" of every object written
    status: dict[str, Any]  # the status patch ({} when unchanged)


def plan_writes(desired: Sequence[Manifest], observed: Observed) -> list[Manifest]:
    """Objects whose rendered hash differs from the observed one (or that do not exist)."""
    writes = []
    for document in desired:
        found = observed.get(document["kind"], document["metadata"]["name"])
        if found is None or found.spec_hash != spec_hash(document) or found.deleting:
            writes.append(document)
    return writes


def keep_immutable_claims(statefulset: Manifest, observed: Observed) -> Manifest:
    """A StatefulSet's volumeClaimTemplates cannot change once created: keep the observed ones
    (storage growth is applied to the PVC itself) and re-hash the result."""
    found = observed.get("StatefulSet", statefulset["metadata"]["name"])
    if found is None or not found.claim_templates:
        return statefulset
    claims = copy.deepcopy(list(found.claim_templates))  # observe() kept what we render
    spec = {**statefulset["spec"], "volumeClaimTemplates": claims}
    metadata = dict(statefulset["metadata"])
    annotations = {
        k: v
        for k, v in (metadata.get("annotations") or {}).items()
        if k != names.ANNOTATION_SPEC_HASH
    }
    metadata["annotations"] = annotations
    return manifest(statefulset["apiVersion"], statefulset["kind"], metadata, spec=spec)


def applied_spec(current_status: Mapping[str, Any]) -> DatabaseSpec | None:
    raw = current_status.get(APPLIED_SPEC_FIELD)
    return None if raw is None else DatabaseSpec.model_validate(raw)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Plan:
    """What one reconcile will do, decided without I/O."""

    db: ManagedDatabase
    body: Mapping[str, Any]
    observed: Observed
    writes: tuple[Manifest, ...]
    claim_to_grow: str | None  # the data PVC's name when its request is below spec.storage

    @property
    def needs_writes(self) -> bool:
        return bool(self.writes) or self.claim_to_grow is not None


class Reconciler:
    def __init__(self, api: KubeApi, images: Images) -> None:
        self.api = api
        self.images = images

    def reconcile(self, body: Mapping[str, Any], observed: Observed) -> Outcome:
        """Raises InvalidSpec / ForbiddenChange (permanent) or ApiError (maybe retryable)."""
        return self.apply(self.plan(body, observed))

    def plan(self, body: Mapping[str, Any], observed: Observed) -> Plan:
        """Parse, check, render and compare: CPU only, no request (raises InvalidSpec)."""
        db = parse_database(body)
        previous = applied_spec(body.get("status") or {})
        if previous is not None:
            check_update(previous, db.spec)
        credentials = self.credentials(db, observed)
        desired = render_objects(db, credentials, self.images)
        desired = [
            keep_immutable_claims(d, observed) if d["kind"] == "StatefulSet" else d for d in desired
        ]
        return Plan(
            db, body, observed, tuple(plan_writes(desired, observed)), _claim_to_grow(db, observed)
        )

    def apply(self, plan: Plan) -> Outcome:
        """Write what the plan says (nothing when it needs no writes), then report status."""
        db, body, observed = plan.db, plan.body, plan.observed
        written: list[str] = []
        served: list[ObservedObject] = []
        for document in plan.writes:
            if (
                document["kind"] == "Secret"
                and document["metadata"]["name"] == names.app_secret_name(db.slug)
                and observed.get("Secret", names.app_secret_name(db.slug)) is None
            ):
                # POST, never apply: a Secret created meanwhile answers 409 (retried, then
                # adopted) instead of being overwritten with a new password.
                response = self.api.create(document)
            else:
                response = self.api.apply(document)
            served.append(observe(response or document))
            written.append(f"{document['kind']}/{document['metadata']['name']}")
        # What was just written exists now, even before its watch event reaches the cache.
        observed = Observed.of([*observed.objects.values(), *served])
        if plan.claim_to_grow is not None:
            self.api.patch(
                resources.CLAIM,
                db.namespace,
                plan.claim_to_grow,
                {"spec": {"resources": {"requests": {"storage": db.spec.storage.size}}}},
            )
            written.append(f"PersistentVolumeClaim/{plan.claim_to_grow}")

        current_status = body.get("status") or {}
        conditions = status.workload_conditions(db.slug, observed, db.spec.backups.enabled)
        phase = status.PHASE_READY if conditions[0].status else status.PHASE_PROVISIONING
        patch = status.status_patch(
            current=current_status,
            phase=phase,
            conditions=conditions,
            generation=(body.get("metadata") or {}).get("generation"),
            secret_name=names.app_secret_name(db.slug),
            now=now(),
        )
        applied = db.spec.model_dump(by_alias=True, mode="json", exclude_none=True)
        if current_status.get(APPLIED_SPEC_FIELD) != applied:
            patch = {**patch, APPLIED_SPEC_FIELD: applied}
        return Outcome(tuple(written), patch)

    def credentials(self, db: ManagedDatabase, observed: Observed) -> Credentials:
        """The existing app Secret is the source of truth; a password is generated only when no
        Secret exists, and then created with POST so a concurrent one is never overwritten."""
        # The owned-object cache is filled before any handler runs, so a Secret missing from it
        # does not exist, or was created a moment ago by us: then the POST answers 409, and the
        # retry finds it in the cache and adopts it.
        app = observed.secret_data(names.app_secret_name(db.slug))
        auth = observed.secret_data(names.auth_secret_name(db.slug)) or {}
        if app is not None and is_valid_password(app.get("PGPASSWORD", "")):
            return Credentials.adopt(app["PGPASSWORD"], auth.get(AUTH_VERIFIER_KEY))
        return Credentials.generate()


def _claim_to_grow(db: ManagedDatabase, observed: Observed) -> str | None:
    claim = observed.get("PersistentVolumeClaim", names.data_claim_name(db.slug))
    if claim is None or claim.requested_storage is None:
        return None
    if parse_quantity(claim.requested_storage) >= parse_quantity(db.spec.storage.size):
        return None
    return claim.name
