"""Passwords, SCRAM verifiers and URLs."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sotadb import credentials
from sotadb.credentials import Credentials, Endpoint

# RFC 7677 section 3: user "user", password "pencil".
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST_BARE = "n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = (
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL_WITHOUT_PROOF = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_PROOF = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
RFC_SERVER_SIGNATURE = base64.b64decode("6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


def test_verifier_matches_rfc7677_test_vector():
    verifier = credentials.scram_verifier("pencil", salt=RFC_SALT, iterations=4096)
    parsed = credentials.parse_verifier(verifier)
    auth_message = ",".join(
        [RFC_CLIENT_FIRST_BARE, RFC_SERVER_FIRST, RFC_CLIENT_FINAL_WITHOUT_PROOF]
    ).encode()
    # The server proves itself with ServerKey ...
    assert hmac.digest(parsed.server_key, auth_message, "sha256") == RFC_SERVER_SIGNATURE
    # ... and checks the client's proof against StoredKey.
    client_signature = hmac.digest(parsed.stored_key, auth_message, "sha256")
    client_key = bytes(a ^ b for a, b in zip(RFC_PROOF, client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() == parsed.stored_key


def test_verifier_is_in_postgresql_stored_format():
    verifier = credentials.scram_verifier("pencil", salt=RFC_SALT)
    scheme, rest = verifier.split("$", 1)
    assert scheme == "SCRAM-SHA-256"
    assert rest.startswith("4096:W22ZaJ0SNY7soEsUEjb6gQ==$")


def test_passwords_are_32_hex_characters_and_never_repeat():
    passwords = {credentials.generate_password() for _ in range(1000)}
    assert len(passwords) == 1000
    assert all(credentials.is_valid_password(p) for p in passwords)


def test_each_verifier_gets_a_fresh_salt():
    first = credentials.scram_verifier("a" * 32)
    second = credentials.scram_verifier("a" * 32)
    assert first != second
    assert credentials.verifier_matches("a" * 32, first)
    assert credentials.verifier_matches("a" * 32, second)
    assert not credentials.verifier_matches("b" * 32, first)
    assert not credentials.verifier_matches("a" * 32, "md5abcdef")


def test_adopting_stored_credentials_keeps_the_verifier_and_the_password():
    stored = Credentials.generate()
    assert Credentials.adopt(stored.password, stored.verifier) == stored
    # A stale verifier (say, edited by hand) is replaced; the password never is.
    repaired = Credentials.adopt(stored.password, credentials.scram_verifier("other"))
    assert repaired.password == stored.password
    assert credentials.verifier_matches(stored.password, repaired.verifier)
    assert Credentials.adopt(stored.password, None).password == stored.password


def test_credentials_never_show_themselves():
    secret = Credentials.generate()
    for text in (repr(secret), str(secret), f"{secret}", repr([secret])):
        assert secret.password not in text
        assert secret.verifier not in text


def test_a_bad_verifier_error_does_not_echo_it():
    with pytest.raises(ValueError, match="not a SCRAM") as caught:
        credentials.parse_verifier("SCRAM-SHA-256$oops-secret")
    assert "oops-secret" not in str(caught.value)


def test_database_url_is_the_seeds_format():
    password = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
    assert credentials.database_url("my-app", password) == (
        f"postgresql://app_my-app:{password}@sota-pgbouncer-my-app:5432/my-app?sslmode=disable"
    )
    assert credentials.direct_database_url("my-app", password) == (
        f"postgresql://app_my-app:{password}@sota-db-my-app:5432/my-app?sslmode=disable"
    )


def test_app_environment_has_every_libpq_variable():
    env = credentials.app_environment("my-app", "f" * 32)
    assert env["PGHOST"] == "sota-pgbouncer-my-app"
    assert env["PGPORT"] == "5432"
    assert env["PGUSER"] == "app_my-app"
    assert env["PGPASSWORD"] == "f" * 32
    assert env["PGDATABASE"] == "my-app"
    assert env["DATABASE_URL"].startswith("postgresql://app_my-app:")
    assert "@sota-db-my-app:5432/" in env["DIRECT_DATABASE_URL"]


def test_a_host_endpoint_replaces_the_service_name():
    url = credentials.database_url("my-app", "f" * 32, Endpoint("127.0.0.1", 54321))
    assert "@127.0.0.1:54321/my-app?" in url
    ipv6 = credentials.database_url("my-app", "f" * 32, Endpoint("::1", 6432))
    assert urlsplit(ipv6).hostname == "::1"


@pytest.mark.parametrize(
    "password",
    [
        pytest.param("p@ss:word/with?special#chars", id="url-delimiters"),
        pytest.param("percent%20sign", id="percent"),
        pytest.param("spaces and+plus", id="space-plus"),
        pytest.param("ünïcødé-€", id="unicode"),
    ],
)
def test_passwords_that_need_escaping_round_trip(password):
    url = credentials.database_url("my-app", password)
    parts = urlsplit(url)
    assert unquote(parts.password or "") == password
    assert parts.hostname == "sota-pgbouncer-my-app"
    assert unquote(parts.path.lstrip("/")) == "my-app"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("my app", id="space"),
        pytest.param("a/b?c#d", id="url-delimiters"),
        pytest.param("user@host:1", id="at-colon"),
        pytest.param("50%off", id="percent"),
        pytest.param("bäckerei", id="unicode"),
    ],
)
def test_names_that_need_escaping_round_trip(name):
    """Slugs never need it (spec.py admits [a-z0-9-] only), but the builder does not rely on
    that: user and database are percent-encoded like the password."""
    password = "p@ss/w:rd?#"
    url = credentials.connection_url(
        name, password, Endpoint("db.example", 6432), sslmode="require"
    )
    parts = urlsplit(url)
    assert unquote(parts.username or "") == f"app_{name}"
    assert unquote(parts.password or "") == password
    assert (parts.hostname, parts.port) == ("db.example", 6432)
    assert unquote(parts.path.removeprefix("/")) == name
    assert parse_qs(parts.query) == {"sslmode": ["require"]}


SLUGS = st.from_regex(r"[a-z]([-a-z0-9]{0,38}[a-z0-9])?", fullmatch=True)


@given(slug=SLUGS, password=st.text(min_size=1, max_size=64))
def test_any_url_parses_back_to_its_parts(slug, password):
    url = credentials.database_url(slug, password)
    parts = urlsplit(url)
    assert parts.scheme == "postgresql"
    assert unquote(parts.username or "") == f"app_{slug}"
    assert unquote(parts.password or "") == password
    assert parts.hostname == f"sota-pgbouncer-{slug}"
    assert parts.port == 5432
    assert unquote(parts.path.lstrip("/")) == slug
    assert parse_qs(parts.query) == {"sslmode": ["disable"]}
