"""ManagedDatabase status: phase and conditions a person can act on. Pure.

Conditions follow metav1.Condition. A condition keeps its lastTransitionTime until its status
flips, so recomputing an unchanged status yields an identical one, and no write is made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sotadb import names
from sotadb.kube.observe import Observed

READY: Final = "Ready"
POSTGRES_READY: Final = "PostgresReady"
POOLER_READY: Final = "PoolerReady"
BACKUPS_SCHEDULED: Final = "BackupsScheduled"
PHASE_PROVISIONING: Final = "Provisioning"
PHASE_READY: Final = "Ready"
PHASE_FAILED: Final = "Failed"
PHASE_DELETING: Final = "Deleting"


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


def workload_conditions(slug: str, observed: Observed, backups_enabled: bool) -> list[Condition]:
    postgres = observed.get("StatefulSet", names.postgres_name(slug))
    pooler = observed.get("Deployment", names.pooler_name(slug))
    cron = observed.get("CronJob", names.backup_cronjob_name(slug))
    conditions = [
        _replicas(POSTGRES_READY, "StatefulSet", names.postgres_name(slug), postgres),
        _replicas(POOLER_READY, "Deployment", names.pooler_name(slug), pooler),
    ]
    if not backups_enabled:
        conditions.append(
            Condition(BACKUPS_SCHEDULED, False, "Disabled", "spec.backups.enabled is false")
        )
    elif cron is None:
        conditions.append(
            Condition(
                BACKUPS_SCHEDULED,
                False,
                "CronJobMissing",
                f"CronJob {names.backup_cronjob_name(slug)} does not exist yet",
            )
        )
    else:
        conditions.append(
            Condition(
                BACKUPS_SCHEDULED, True, "Scheduled", f"CronJob {cron.name} takes daily backups"
            )
        )
    waiting = [c for c in conditions[:2] if not c.status]
    if backups_enabled and not conditions[2].status:
        waiting.append(conditions[2])
    if waiting:
        ready = Condition(READY, False, "Provisioning", "; ".join(c.message for c in waiting))
    else:
        ready = Condition(
            READY,
            True,
            "Ready",
            f"PostgreSQL and PgBouncer are ready; apps read Secret {names.app_secret_name(slug)}",
        )
    return [ready, *conditions]


def ready_message(slug: str) -> str:
    """The Ready Event's message."""
    return (
        f"PostgreSQL and PgBouncer are ready; DATABASE_URL is in Secret "
        f"{names.app_secret_name(slug)}"
    )


def failed_conditions(reason: str, message: str) -> list[Condition]:
    return [Condition(READY, False, reason, message)]


def _replicas(kind_condition: str, kind: str, name: str, found: Any) -> Condition:
    if found is None:
        return Condition(kind_condition, False, "Creating", f"{kind} {name} does not exist yet")
    if found.ready_replicas < 1:
        return Condition(kind_condition, False, "Starting", f"{kind} {name} has no ready replica")
    return Condition(kind_condition, True, "Ready", f"{kind} {name} is ready")


def status_patch(
    *,
    current: Mapping[str, Any],
    phase: str,
    conditions: Sequence[Condition],
    generation: int | None,
    secret_name: str | None,
    now: str,
) -> dict[str, Any]:
    """The status fields to write, or {} when nothing would change."""
    previous = {c.get("type"): c for c in current.get("conditions") or []}
    rendered = []
    for condition in conditions:
        status = "True" if condition.status else "False"
        before = previous.get(condition.type) or {}
        moved = before.get("status") != status
        rendered.append(
            {
                "type": condition.type,
                "status": status,
                "reason": condition.reason,
                "message": condition.message,
                "lastTransitionTime": now if moved else before.get("lastTransitionTime", now),
                **({"observedGeneration": generation} if generation is not None else {}),
            }
        )
    desired: dict[str, Any] = {"phase": phase, "conditions": rendered}
    if generation is not None:
        desired["observedGeneration"] = generation
    if secret_name is not None:
        desired["secretName"] = secret_name
    if all(current.get(key) == value for key, value in desired.items()):
        return {}
    return desired
