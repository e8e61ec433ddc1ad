"""Passwords, SCRAM-SHA-256 verifiers and connection URLs. Pure apart from the CSPRNG.

PostgreSQL and PgBouncer get the *same* verifier (same salt and iterations): PgBouncer can
then authenticate the client and replay the proof to the server (SCRAM passthrough), and no
plaintext password is stored anywhere but the app's own Secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlencode

from sotadb import names

PASSWORD_HEX_LENGTH: Final = 32
SCRAM_ITERATIONS: Final = 4096  # PostgreSQL's default scram_iterations
SCRAM_SALT_BYTES: Final = 16
_PASSWORD_RE: Final = re.compile(r"[0-9a-f]{32}")
_VERIFIER_RE: Final = re.compile(
    r"SCRAM-SHA-256\$(?P<iterations>[1-9][0-9]*):(?P<salt>[A-Za-z0-9+/=]+)"
    r"\$(?P<stored>[A-Za-z0-9+/=]+):(?P<server>[A-Za-z0-9+/=]+)"
)
DEFAULT_SSLMODE: Final = "disable"


def generate_password() -> str:
    """32 hex characters (128 bits) from the operating system's CSPRNG."""
    return secrets.token_hex(PASSWORD_HEX_LENGTH // 2)


def is_valid_password(password: str) -> bool:
    return _PASSWORD_RE.fullmatch(password) is not None


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    # SASLprep is the identity on the ASCII hex passwords we generate.
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)


def scram_verifier(
    password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> str:
    """The verifier in PostgreSQL's stored format (RFC 5802 / RFC 7677):
    `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, all base64."""
    salt = secrets.token_bytes(SCRAM_SALT_BYTES) if salt is None else salt
    salted = salted_password(password, salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


@dataclass(frozen=True)
class ParsedVerifier:
    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes


def parse_verifier(verifier: str) -> ParsedVerifier:
    match = _VERIFIER_RE.fullmatch(verifier)
    if match is None:
        raise ValueError("not a SCRAM-SHA-256 verifier")  # never echo the value
    return ParsedVerifier(
        iterations=int(match["iterations"]),
        salt=base64.b64decode(match["salt"]),
        stored_key=base64.b64decode(match["stored"]),
        server_key=base64.b64decode(match["server"]),
    )


def verifier_matches(password: str, verifier: str) -> bool:
    """True when `verifier` was made from `password` (constant-time comparison)."""
    try:
        parsed = parse_verifier(verifier)
    except ValueError:
        return False
    expected = scram_verifier(password, salt=parsed.salt, iterations=parsed.iterations)
    return hmac.compare_digest(expected, verifier)


@dataclass(frozen=True)
class Credentials:
    """The app role's password and its verifier. `repr` hides both."""

    password: str
    verifier: str

    @classmethod
    def generate(cls) -> Credentials:
        password = generate_password()
        return cls(password=password, verifier=scram_verifier(password))

    @classmethod
    def adopt(cls, password: str, verifier: str | None) -> Credentials:
        """Credentials read back from storage: keep the verifier (and so its salt) when it still
        matches the password, else derive a fresh one. The password itself never changes."""
        if verifier is not None and verifier_matches(password, verifier):
            return cls(password=password, verifier=verifier)
        return cls(password=password, verifier=scram_verifier(password))

    def __repr__(self) -> str:
        return "Credentials(password=<redacted>, verifier=<redacted>)"

    __str__ = __repr__


@dataclass(frozen=True)
class Endpoint:
    """Where a client reaches a server: the Service / container name and port by default."""

    host: str
    port: int


def pooler_endpoint(slug: str) -> Endpoint:
    return Endpoint(names.pooler_name(slug), names.POOLER_PORT)


def direct_endpoint(slug: str) -> Endpoint:
    return Endpoint(names.postgres_name(slug), names.POSTGRES_PORT)


def connection_url(
    slug: str, password: str, endpoint: Endpoint, *, sslmode: str = DEFAULT_SSLMODE
) -> str:
    """`postgresql://app_{slug}:{password}@{host}:{port}/{slug}?sslmode=…`, percent-encoding
    every part that needs it (the seed's format for the names and passwords we generate)."""
    user = quote(names.role_name(slug), safe="")
    secret = quote(password, safe="")
    database = quote(names.database_name(slug), safe="")
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    query = urlencode({"sslmode": sslmode})
    return f"postgresql://{user}:{secret}@{host}:{endpoint.port}/{database}?{query}"


def database_url(slug: str, password: str, endpoint: Endpoint | None = None) -> str:
    """DATABASE_URL: through PgBouncer."""
    return connection_url(slug, password, endpoint or pooler_endpoint(slug))


def direct_database_url(slug: str, password: str, endpoint: Endpoint | None = None) -> str:
    """DIRECT_DATABASE_URL: straight to PostgreSQL, for migrations that take advisory locks."""
    return connection_url(slug, password, endpoint or direct_endpoint(slug))


def app_environment(
    slug: str,
    password: str,
    *,
    pooler: Endpoint | None = None,
    direct: Endpoint | None = None,
) -> dict[str, str]:
    """Everything an app needs, as environment variables (the app Secret's keys)."""
    pooled = pooler or pooler_endpoint(slug)
    return {
        "DATABASE_URL": database_url(slug, password, pooled),
        "DIRECT_DATABASE_URL": direct_database_url(slug, password, direct),
        "PGHOST": pooled.host,
        "PGPORT": str(pooled.port),
        "PGUSER": names.role_name(slug),
        "PGPASSWORD": password,
        "PGDATABASE": names.database_name(slug),
        "PGSSLMODE": DEFAULT_SSLMODE,
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
