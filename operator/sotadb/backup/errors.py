"""Errors of the backup package: subclasses of the project's tree, messages that name the fix."""

from __future__ import annotations

from sotadb.errors import SotadbError, StateCorrupted


class BackupFailed(SotadbError):
    """A dump could not be taken or stored; the message says which step and why."""


class BackupBusy(SotadbError):
    """Another backup, restore or retention run holds this database's backup lock."""


class BackupNotFound(SotadbError):
    """No backup of that name (or no good backup, for `latest`)."""


class RestoreRefused(SotadbError):
    """A restore stopped before it replaced anything: the file or its data failed a check."""


class RecordCorrupted(StateCorrupted):
    """A backup record (JSON) cannot be read."""
