"""The single host's source of truth: one state file per database, credentials encrypted.

Layout under $SOTADB_HOME (default: the user's data directory):
    key                              32 random bytes, mode 0600 (AES-256-GCM key)
    databases/{slug}/state.json      spec, host ports, and the sealed credentials + URL
    databases/{slug}/files/...       rendered config files the containers mount

Credentials are written before any container exists, so a crash mid-`up` never leaves a
database initialised with a password nobody knows; they are never regenerated while the
state file exists.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import platformdirs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sotadb.credentials import Credentials, database_url
from sotadb.errors import StateCorrupted

STATE_VERSION: Final = 1
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12


def default_home() -> Path:
    configured = os.environ.get("SOTADB_HOME")
    return Path(configured) if configured else Path(platformdirs.user_data_dir("sotadb"))


@dataclass(frozen=True)
class DatabaseState:
    slug: str
    document: Mapping[str, Any]  # the ManagedDatabase as last applied
    credentials: Credentials = field(repr=False)
    host_ports: Mapping[str, int]  # container name → port published on 127.0.0.1


class StateStore:
    def __init__(self, home: Path | None = None) -> None:
        self.home = home or default_home()

    # ---------------------------------------------------------------- paths

    def database_dir(self, slug: str) -> Path:
        return self.home / "databases" / slug

    def files_dir(self, slug: str) -> Path:
        return self.database_dir(slug) / "files"

    def _state_file(self, slug: str) -> Path:
        return self.database_dir(slug) / "state.json"

    # ---------------------------------------------------------------- reading and writing

    def slugs(self) -> list[str]:
        root = self.home / "databases"
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if (p / "state.json").is_file())

    def load(self, slug: str) -> DatabaseState | None:
        path = self._state_file(slug)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise StateCorrupted(f"{path} cannot be read ({type(e).__name__})") from None
        sealed = self._open(slug, raw["sealed"])
        return DatabaseState(
            slug=slug,
            document=raw["document"],
            credentials=Credentials.adopt(sealed["password"], sealed.get("verifier")),
            host_ports=dict(raw.get("hostPorts") or {}),
        )

    def save(self, state: DatabaseState) -> None:
        secrets_payload = {
            "password": state.credentials.password,
            "verifier": state.credentials.verifier,
            "databaseUrl": database_url(state.slug, state.credentials.password),
        }
        raw = {
            "version": STATE_VERSION,
            "document": dict(state.document),
            "hostPorts": dict(state.host_ports),
            "sealed": self._seal(state.slug, secrets_payload),
        }
        write_atomically(self._state_file(state.slug), json.dumps(raw, indent=2) + "\n")

    def remove(self, slug: str) -> None:
        shutil.rmtree(self.database_dir(slug), ignore_errors=True)

    def write_files(self, slug: str, directory: str, files: Mapping[str, str]) -> Path:
        """Write a volume's files (atomically, each) and drop files it no longer has."""
        target = self.files_dir(slug) / directory
        target.mkdir(parents=True, exist_ok=True)
        target.chmod(0o755)  # the containers' non-root user reads through this mount
        for name, content in files.items():
            write_atomically(target / name, content, mode=0o644)
        for stale in set(p.name for p in target.iterdir()) - set(files):
            (target / stale).unlink()
        return target

    # ---------------------------------------------------------------- encryption

    def _key(self) -> bytes:
        path = self.home / "key"
        try:
            key = path.read_bytes()
        except FileNotFoundError:
            self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
            key = secrets.token_bytes(KEY_BYTES)
            try:
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another `sotadb` made it first: use theirs
                return self._key()
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(key)
                handle.flush()
                os.fsync(handle.fileno())
            return key
        if len(key) != KEY_BYTES:
            raise StateCorrupted(f"{path} is not a {KEY_BYTES}-byte key")
        return key

    def _seal(self, slug: str, payload: Mapping[str, str]) -> dict[str, str]:
        nonce = secrets.token_bytes(NONCE_BYTES)
        ciphertext = AESGCM(self._key()).encrypt(nonce, json.dumps(payload).encode(), slug.encode())
        return {
            "algorithm": "AES-256-GCM",
            "nonce": base64.b64encode(nonce).decode(),
            "ciphertext": base64.b64encode(ciphertext).decode(),
        }

    def _open(self, slug: str, sealed: Mapping[str, str]) -> dict[str, str]:
        try:
            plaintext = AESGCM(self._key()).decrypt(
                base64.b64decode(sealed["nonce"]),
                base64.b64decode(sealed["ciphertext"]),
                slug.encode(),
            )
        except (InvalidTag, KeyError, ValueError):
            raise StateCorrupted(
                f"the credentials of {slug} cannot be decrypted with {self.home / 'key'} "
                "(fix: restore the key file that wrote them)"
            ) from None
        result: dict[str, str] = json.loads(plaintext)
        return result


def write_atomically(path: Path, content: str, *, mode: int = 0o600) -> None:
    """Temporary file in the same directory, fsync, rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
