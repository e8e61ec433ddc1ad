"""The REST API over in-memory engines: authentication, project isolation, the error shape on
every error path, idempotent ensure, backups, and no password in any response.

Every test here uses the `api` harness, which at teardown proves that no response it received
contains a password or verifier from the state store (see test_api_fakes.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_api_fakes import Harness, make_harness

from sotadb import names
from sotadb.api import service
from sotadb.api.errors import BackupConflict, BackupsUnavailable
from sotadb.api.projects import slug_for
from sotadb.backup import errors as backup_errors
from sotadb.backup.catalog import Phase
from sotadb.docker.engine import ImageMissing
from sotadb.errors import FieldProblem, ForbiddenChange, RuntimeUnavailable, StateCorrupted

PROJECT = "550e8400-e29b-41d4-a716-446655440000"
OTHER = "6fa459ea-ee8a-3ca4-894e-db77e160355e"
DB = f"/v1/projects/{PROJECT}/database"
BACKUPS = f"{DB}/backups"
ROUTES = [
    pytest.param("POST", DB, id="ensure"),
    pytest.param("GET", DB, id="status"),
    pytest.param("GET", BACKUPS, id="list-backups"),
    pytest.param("POST", BACKUPS, id="create-backup"),
]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Harness]:
    yield from make_harness(tmp_path)


def assert_error(response, status: int, code: str, *, field: str | None = None) -> dict:
    """The one error shape: {"error": {"code", "message", "field"?}}, JSON, no trace."""
    __tracebackhide__ = True
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) <= {"code", "message", "field"}
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    assert error.get("field") == field
    assert "Traceback" not in response.text
    assert 'File "' not in response.text
    return error


# ---------------------------------------------------------------- authentication


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="no-header"),
        pytest.param("Bearer sota_not-a-real-token", id="wrong-token"),
        pytest.param("Bearer ", id="empty-token"),
        pytest.param("Basic dXNlcjpwYXNz", id="other-scheme"),
        pytest.param("sota_x", id="no-scheme"),
    ],
)
def test_no_valid_token_is_401_with_a_bearer_challenge(api, method, path, authorization):
    api.token(PROJECT)  # a token exists; it just is not the one sent
    headers = {} if authorization is None else {"Authorization": authorization}
    response = api.client.request(method, path, headers=headers)
    assert_error(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert api.runtime.up_calls == 0


def test_a_revoked_token_is_401(api):
    record, token = api.tokens.create(PROJECT)
    headers = {"Authorization": f"Bearer {token}"}
    assert api.client.post(DB, headers=headers).status_code == 200
    api.tokens.revoke(record.id)
    assert_error(api.client.get(DB, headers=headers), 401, "unauthenticated")


def test_authentication_comes_before_validation(api):
    """An unauthenticated caller learns nothing, not even which project names are valid."""
    response = api.client.get("/v1/projects/..x%20y/database")
    assert_error(response, 401, "unauthenticated")


def test_the_scheme_is_case_insensitive(api):
    response = api.client.post(DB, headers={"Authorization": f"bearer {api.token(PROJECT)}"})
    assert response.status_code == 200


# ---------------------------------------------------------------- project isolation


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_another_projects_token_gets_the_404_of_a_missing_database(api, method, path):
    owner = api.auth(PROJECT)
    assert api.client.post(DB, headers=owner).status_code == 200
    intruder = api.auth(OTHER)
    response = api.client.request(method, path, headers=intruder)
    error = assert_error(response, 404, "not_found")
    # The same words as for a project without any database: existence is not revealed.
    missing = api.client.get(DB.replace(PROJECT, "nothing-here"), headers=api.auth("nothing-here"))
    assert error["message"] == assert_error(missing, 404, "not_found")["message"].replace(
        "nothing-here", PROJECT
    )
    assert api.runtime.up_calls == 1
    assert len(api.backups.records.get(slug_for(PROJECT), [])) == 0


def test_a_token_for_a_differently_cased_project_is_another_project(api):
    assert api.client.post(DB, headers=api.auth(PROJECT)).status_code == 200
    upper = PROJECT.upper()
    response = api.client.get(f"/v1/projects/{upper}/database", headers=api.auth(PROJECT))
    assert_error(response, 404, "not_found")


def test_two_projects_get_two_databases(api):
    first = api.client.post(DB, headers=api.auth(PROJECT)).json()
    second = api.client.post(f"/v1/projects/{OTHER}/database", headers=api.auth(OTHER)).json()
    assert first["slug"] != second["slug"]
    assert set(api.runtime.store.slugs()) == {first["slug"], second["slug"]}


# ---------------------------------------------------------------- ensureDatabase and status


def test_ensure_provisions_and_returns_the_status(api):
    response = api.client.post(DB, headers=api.auth(PROJECT))
    assert response.status_code == 200
    slug = slug_for(PROJECT)
    assert response.json() == {
        "project": PROJECT,
        "slug": slug,
        "phase": "Ready",
        "postgresVersion": 17,
        "databaseUrl": f"postgresql://app_{slug}:********@sota-pgbouncer-{slug}:5432/{slug}"
        "?sslmode=disable",
        "directDatabaseUrl": f"postgresql://app_{slug}:********@sota-db-{slug}:5432/{slug}"
        "?sslmode=disable",
        "user": f"app_{slug}",
        "database": slug,
        "port": 5432,
        "sslmode": "disable",
        "hosts": {
            "pooler": names.pooler_name(slug),
            "postgres": names.postgres_name(slug),
            "network": names.network_name(slug),
        },
        "pool": {"mode": "transaction", "defaultPoolSize": 20, "maxClientConnections": 100},
        "backups": {"enabled": True, "retentionDays": 7},
    }


def test_ensure_twice_returns_the_same_status_and_keeps_the_password(api):
    headers = api.auth(PROJECT)
    first = api.client.post(DB, headers=headers)
    password = api.secrets()[f"password of {slug_for(PROJECT)}"]
    second = api.client.post(DB, headers=headers)
    assert first.json() == second.json()
    assert api.secrets()[f"password of {slug_for(PROJECT)}"] == password


def test_ensure_keeps_a_stored_spec(api):
    """A database made with `sotadb up -f` keeps its spec when the API ensures it."""
    slug = slug_for(PROJECT)
    document = {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND_DATABASE,
        "metadata": {"name": slug},
        "spec": {"pool": {"defaultPoolSize": 25}},
    }
    api.runtime.up(document)
    body = api.client.post(DB, headers=api.auth(PROJECT)).json()
    assert body["pool"]["defaultPoolSize"] == 25


def test_status_of_a_missing_database_is_404(api):
    assert_error(api.client.get(DB, headers=api.auth(PROJECT)), 404, "not_found")


@pytest.mark.parametrize(
    ("running", "answers", "phase"),
    [
        pytest.param(True, True, "Ready", id="ready"),
        pytest.param(True, False, "Provisioning", id="not-answering"),
        pytest.param(False, True, "Stopped", id="down"),
    ],
)
def test_status_phase(api, running, answers, phase):
    headers = api.auth(PROJECT)
    api.client.post(DB, headers=headers)
    if not running:
        api.runtime.down(slug_for(PROJECT))
    api.runtime.answers = answers
    assert api.client.get(DB, headers=headers).json()["phase"] == phase


def test_status_is_the_same_as_ensure_returned(api):
    headers = api.auth(PROJECT)
    assert api.client.post(DB, headers=headers).json() == api.client.get(DB, headers=headers).json()


def test_a_uuid_that_is_a_slug_already_is_its_own_slug(api):
    project = "e3e70682-c209-4cac-629f-6fbed82c07cd"
    body = api.client.post(f"/v1/projects/{project}/database", headers=api.auth(project)).json()
    assert body["slug"] == project


# ---------------------------------------------------------------- backups


def test_backups_list_is_empty_then_holds_the_new_backup(api):
    headers = api.auth(PROJECT)
    api.client.post(DB, headers=headers)
    empty = api.client.get(BACKUPS, headers=headers)
    assert empty.status_code == 200
    assert empty.json() == {"project": PROJECT, "slug": slug_for(PROJECT), "backups": []}
    created = api.client.post(BACKUPS, headers=headers)
    assert created.status_code == 201
    backup = created.json()
    assert backup["phase"] == "Succeeded"
    assert backup["verification"] == "Passed"
    assert backup["format"] == "plain+gzip"
    assert backup["startedAt"].endswith("Z")
    assert "location" not in backup  # no host paths
    listed = api.client.get(BACKUPS, headers=headers).json()["backups"]
    assert listed == [backup]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_backups_of_a_missing_database_are_404(api, method):
    assert_error(api.client.request(method, BACKUPS, headers=api.auth(PROJECT)), 404, "not_found")


def test_a_backup_of_a_stopped_database_is_409(api):
    headers = api.auth(PROJECT)
    api.client.post(DB, headers=headers)
    api.runtime.down(slug_for(PROJECT))
    assert_error(api.client.post(BACKUPS, headers=headers), 409, "not_ready")


def test_a_busy_backup_lock_is_409(api):
    headers = api.auth(PROJECT)
    api.client.post(DB, headers=headers)
    api.backups.fail = BackupConflict("another backup of it is in progress (fix: wait)")
    assert_error(api.client.post(BACKUPS, headers=headers), 409, "backup_in_progress")


def test_a_failed_backup_is_500_backup_failed(api):
    headers = api.auth(PROJECT)
    api.client.post(DB, headers=headers)
    api.backups.next_phase = Phase.FAILED
    error = assert_error(api.client.post(BACKUPS, headers=headers), 500, "backup_failed")
    assert "could not connect" in error["message"]


def test_backups_unavailable_is_503(api):
    headers = api.auth(PROJECT)
    api.client.post(DB, headers=headers)
    api.backups.fail = BackupsUnavailable("backups are not available on this host")
    assert_error(api.client.get(BACKUPS, headers=headers), 503, "backups_unavailable")


@pytest.mark.parametrize(
    ("raised", "translated"),
    [
        pytest.param(backup_errors.BackupBusy("busy"), BackupConflict, id="busy"),
        pytest.param(backup_errors.BackupFailed("dump"), service.BackupFailed, id="failed"),
    ],
)
def test_the_backup_packages_errors_become_the_apis(raised, translated):
    with pytest.raises(translated), service._backup_errors():
        raise raised


# ---------------------------------------------------------------- the error shape everywhere


@pytest.mark.parametrize(
    ("path", "field"),
    [
        pytest.param("/v1/projects/a%20b/database", "path.project", id="space"),
        pytest.param("/v1/projects/%C3%A9/database", "path.project", id="non-ascii"),
        pytest.param(f"/v1/projects/{'a' * 254}/database", "path.project", id="too-long"),
        pytest.param("/v1/projects/.../database", "path.project", id="only-dots"),
    ],
)
def test_an_invalid_project_name_is_422_naming_the_field(api, path, field):
    error = assert_error(
        api.client.get(path, headers=api.auth(PROJECT)), 422, "invalid_request", field=field
    )
    assert "pattern" in error["message"] or "at most" in error["message"]


def test_an_unknown_path_is_404_in_the_error_shape(api):
    assert_error(api.client.get("/v1/nothing", headers=api.auth(PROJECT)), 404, "not_found")


def test_an_unknown_method_is_405_with_allow(api):
    response = api.client.delete(DB, headers=api.auth(PROJECT))
    assert_error(response, 405, "method_not_allowed")
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        pytest.param(
            RuntimeUnavailable("no Docker engine"), 503, "engine_unavailable", id="engine"
        ),
        pytest.param(ImageMissing(names.POSTGRES_IMAGE), 503, "images_missing", id="images"),
        pytest.param(
            ForbiddenChange([FieldProblem("spec.storage.size", "shrinks", "grow it")]),
            409,
            "forbidden_change",
            id="forbidden-change",
        ),
        pytest.param(StateCorrupted("state cannot be read"), 500, "state_corrupted", id="state"),
    ],
)
def test_engine_errors_map_to_status_and_code(api, error, status, code):
    api.runtime.fail = error
    assert_error(api.client.post(DB, headers=api.auth(PROJECT)), status, code)


def test_no_engine_at_connect_is_503_and_the_next_request_connects(api):
    headers = api.auth(PROJECT)
    api.connect_error = RuntimeUnavailable("no Docker engine answers (fix: start it)")
    assert_error(api.client.post(DB, headers=headers), 503, "engine_unavailable")
    api.connect_error = None
    assert api.client.post(DB, headers=headers).status_code == 200


def test_an_engine_failure_mid_request_is_503(api):
    import requests

    headers = api.auth(PROJECT)
    api.client.post(DB, headers=headers)
    api.runtime.fail = requests.exceptions.ConnectionError("socket closed")
    assert_error(api.client.get(DB, headers=headers), 503, "engine_unavailable")


def test_an_unexpected_exception_is_a_500_without_its_text(api, caplog):
    headers = api.auth(PROJECT)
    secret_text = "a value that must not leave the server"
    api.runtime.fail = ValueError(secret_text)
    with caplog.at_level(logging.ERROR, logger="sotadb.api"):
        response = api.client.post(DB, headers=headers)
    assert_error(response, 500, "internal")
    assert secret_text not in response.text
    assert "ValueError" in caplog.text
    assert secret_text not in caplog.text


def test_the_openapi_document_needs_no_token_and_declares_bearer(api):
    document = api.client.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A token from `sotadb token create PROJECT`.",
    }
    operations = {
        op["operationId"]: (path, method, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
    }
    assert set(operations) == {"ensureDatabase", "getDatabase", "listBackups", "createBackup"}
    for _, _, op in operations.values():
        assert op["security"] == [{"bearer": []}]
        for status in ("401", "404", "422", "500", "503"):
            schema = op["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorResponse"}
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_no_response_contains_a_password(api):
    """Every route, success and failure, for two projects; then the harness's own check."""
    for project in (PROJECT, OTHER):
        headers = api.auth(project)
        base = f"/v1/projects/{project}/database"
        for method, path in [
            ("POST", base),
            ("POST", base),
            ("GET", base),
            ("POST", f"{base}/backups"),
            ("GET", f"{base}/backups"),
            ("GET", base.replace(project, PROJECT if project == OTHER else OTHER)),
        ]:
            api.client.request(method, path, headers=headers)
    assert len(api.secrets()) == 4
    api.assert_no_secret_in_responses()
