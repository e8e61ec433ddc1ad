"""API tokens: made once, shown once, stored only as a hash, each scoped to one project.

- **Format** `sota_` + `secrets.token_urlsafe(32)`: 256 bits from the OS CSPRNG; the prefix
  lets secret scanners and people recognise one.
- **Storage** `$SOTADB_HOME/tokens.json` (mode 0600, written atomically under a lock file, so
  two `sotadb token create` never lose each other's token): per token an id, the project, the
  first 9 characters (`sota_` + 4, to recognise it in `sotadb token list`), the creation time
  and the SHA-256 of the whole token. The token itself is never stored or logged.
- **Why SHA-256 and not a slow KDF** (bcrypt, scrypt, Argon2): a slow KDF protects
  low-entropy, human-chosen passwords against offline guessing. These tokens are 256 uniformly
  random bits; with the hash file in hand an attacker still has to search 2^256 candidates,
  which no hash speed makes feasible. A fast hash also keeps every request cheap.
- **Checking** hashes the presented token and compares it with *every* stored hash with
  `hmac.compare_digest`, without stopping at a match, so timing reveals nothing about the
  stored hashes. The file is re-read when it changes (inode, mtime and size), so a `create` or
  `revoke` applies to a running `sotadb serve` at its next request.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from sotadb.api.projects import PROJECT_MAX_LENGTH, is_valid_project
from sotadb.docker.state import default_home, write_atomically
from sotadb.errors import FieldProblem, InvalidSpec, StateCorrupted

TOKEN_PREFIX: Final = "sota_"  # noqa: S105 - a prefix, not a secret
TOKEN_BYTES: Final = 32
SHOWN_PREFIX_LENGTH: Final = len(TOKEN_PREFIX) + 4
FILE_NAME: Final = "tokens.json"
FILE_VERSION: Final = 1
TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"
# Longer than any token we make; bounds the work an unauthenticated request can cause.
MAX_PRESENTED_LENGTH: Final = 256


@dataclass(frozen=True)
class TokenRecord:
    id: str
    project: str
    prefix: str  # the token's first characters, enough to recognise it, far too few to use it
    created_at: datetime
    sha256: str = field(repr=False)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_project(project: str) -> None:
    if not is_valid_project(project):
        raise InvalidSpec(
            [
                FieldProblem(
                    "PROJECT",
                    f"{project!r} is not a project name",
                    f"use 1-{PROJECT_MAX_LENGTH} of A-Z a-z 0-9 . _ ~ - (not only dots)",
                )
            ]
        )


class TokenStore:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_home() / FILE_NAME
        self._cache_lock = threading.Lock()
        self._cache: tuple[tuple[int, int, int], tuple[TokenRecord, ...]] | None = None

    # ---------------------------------------------------------------- changes

    def create(self, project: str, *, now: datetime | None = None) -> tuple[TokenRecord, str]:
        """A new token for `project`: its record, and the token itself (shown once)."""
        check_project(project)
        token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        moment = (now or datetime.now(UTC)).replace(microsecond=0)
        with self._locked():
            records = list(self._read())
            taken = {r.id for r in records}
            token_id = secrets.token_hex(6)
            while token_id in taken:  # 48 bits: practically never loops
                token_id = secrets.token_hex(6)
            record = TokenRecord(
                id=token_id,
                project=project,
                prefix=token[:SHOWN_PREFIX_LENGTH],
                created_at=moment,
                sha256=hash_token(token),
            )
            self._write([*records, record])
        return record, token

    def revoke(self, token_id: str) -> TokenRecord | None:
        """Remove a token; the removed record, or None when there was no such id."""
        with self._locked():
            records = list(self._read())
            kept = [r for r in records if r.id != token_id]
            if len(kept) == len(records):
                return None
            self._write(kept)
        return next(r for r in records if r.id == token_id)

    # ---------------------------------------------------------------- reading

    def records(self) -> tuple[TokenRecord, ...]:
        return self._read()

    def authenticate(self, presented: str) -> TokenRecord | None:
        """The record of the token presented, or None. Compares with every stored hash."""
        if not presented.startswith(TOKEN_PREFIX) or len(presented) > MAX_PRESENTED_LENGTH:
            return None
        digest = hash_token(presented)
        found: TokenRecord | None = None
        for record in self._cached():
            if hmac.compare_digest(record.sha256, digest):
                found = record
        return found

    def _cached(self) -> tuple[TokenRecord, ...]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return ()
        version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        with self._cache_lock:
            if self._cache is not None and self._cache[0] == version:
                return self._cache[1]
        records = self._read()
        with self._cache_lock:
            self._cache = (version, records)
        return records

    def _read(self) -> tuple[TokenRecord, ...]:
        try:
            raw: Any = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return ()
        except (OSError, ValueError) as e:
            raise StateCorrupted(f"{self.path} cannot be read ({type(e).__name__})") from None
        try:
            if raw["version"] != FILE_VERSION:
                raise ValueError(f"version {raw['version']!r}")
            return tuple(_record_from_json(entry) for entry in raw["tokens"])
        except (KeyError, TypeError, ValueError) as e:
            raise StateCorrupted(
                f"{self.path} is not a token file ({type(e).__name__}; fix: restore it or "
                "remove it and create new tokens)"
            ) from None

    def _write(self, records: list[TokenRecord]) -> None:
        raw = {"version": FILE_VERSION, "tokens": [_record_to_json(r) for r in records]}
        write_atomically(self.path, json.dumps(raw, indent=2) + "\n", mode=0o600)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time across processes (read-modify-write of the file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # closing releases the lock


def _record_to_json(record: TokenRecord) -> dict[str, str]:
    return {
        "id": record.id,
        "project": record.project,
        "prefix": record.prefix,
        "createdAt": record.created_at.astimezone(UTC).strftime(TIME_FORMAT),
        "sha256": record.sha256,
    }


def _record_from_json(entry: Any) -> TokenRecord:
    values = {key: entry[key] for key in ("id", "project", "prefix", "createdAt", "sha256")}
    if not all(isinstance(value, str) for value in values.values()):
        raise TypeError("a token entry has a field that is not a string")
    return TokenRecord(
        id=values["id"],
        project=values["project"],
        prefix=values["prefix"],
        created_at=datetime.strptime(values["createdAt"], TIME_FORMAT).replace(tzinfo=UTC),
        sha256=values["sha256"],
    )
