"""When the daily backup is due. Pure.

Each database has a daily slot at `ManagedDatabase.backup_minute_of_day` (UTC; spread over
00:00–05:59 by namespace and name). The slot in force is the latest one not after `now`
(today's once it has passed, else yesterday's), so a host that was off at the slot catches up
as soon as the daemon runs again.

- The slot is satisfied by a backup started at or after it that Succeeded and did not fail its
  drill (a drill that could not judge it does not hold the schedule up).
- Unsatisfied, it is due now — but a failed attempt since the slot waits `RETRY_AFTER` before
  the next try, so a database that is down yields one Failed record an hour, not one a pass.
- Satisfied, the next one is due at the next day's slot.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, time, timedelta
from typing import Final

from sotadb.backup.catalog import BackupRecord, Phase, Verification

RETRY_AFTER: Final = timedelta(hours=1)
MINUTES_PER_DAY: Final = 24 * 60


def slot_in_force(now: datetime, minute_of_day: int) -> datetime:
    if not 0 <= minute_of_day < MINUTES_PER_DAY:
        raise ValueError(f"minute of day {minute_of_day} is outside 0..1439")
    today = datetime.combine(now.date(), time(tzinfo=now.tzinfo)) + timedelta(minutes=minute_of_day)
    return today if today <= now else today - timedelta(days=1)


def satisfies(record: BackupRecord) -> bool:
    return record.phase is Phase.SUCCEEDED and record.verification is not Verification.FAILED


def next_due(
    now: datetime,
    minute_of_day: int,
    records: Iterable[BackupRecord],
    *,
    retry_after: timedelta = RETRY_AFTER,
) -> datetime:
    """When the next backup should start; a time not after `now` means: start one now."""
    slot = slot_in_force(now, minute_of_day)
    since_slot = [r for r in records if r.started_at >= slot]
    if any(satisfies(r) for r in since_slot):
        return slot + timedelta(days=1)
    if since_slot:
        last_attempt = max(r.started_at for r in since_slot)
        return max(slot, last_attempt + retry_after)
    return slot
