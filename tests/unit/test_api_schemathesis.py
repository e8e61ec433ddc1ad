"""Schemathesis against the served OpenAPI document (the app in-process, over ASGI).

Two runs, each over every operation with schemathesis' default checks (no server error,
status codes, content types, headers and bodies as documented, invalid input rejected,
valid input accepted, unsupported methods 405 with `Allow`, the token not ignored):

- **any project**: project names drawn from the schema, with a token scoped to one fixed
  project, so nearly every request meets the 404 of a foreign project, or a 422;
- **its own project**: the `project` parameter pinned to the token's project, so the
  successful paths (200 and 201, databases and backups) are checked against their schemas.

Bounded (25 examples per operation and phase) and deterministic (`derandomize`, no example
database). The harness also proves no response carried a password.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.python import asgi
from test_api_fakes import Harness, make_harness

from sotadb.api.app import build_app
from sotadb.api.service import Runtime
from sotadb.docker.state import StateStore

PROJECT = "550e8400-e29b-41d4-a716-446655440000"
BASE_URL = f"http://{asgi.HOST}"
SETTINGS = settings(
    max_examples=25,
    derandomize=True,
    database=None,
    deadline=None,
    # The harness is per test function by design: its state is what the checks exercise.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _never_called(_: StateStore) -> Runtime:
    raise AssertionError("the schema's app serves only its document")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Harness]:
    yield from make_harness(tmp_path)


@pytest.fixture
def session(api: Harness) -> Iterator[requests.Session]:
    """Requests to this test's app, in-process, with the token of PROJECT."""
    client = asgi.get_client(api.app)
    client.headers["Authorization"] = f"Bearer {api.token(PROJECT)}"

    def record(response: requests.Response, *args: object, **kwargs: object) -> None:
        request = response.request
        path = request.path_url if request is not None else "?"
        api.record(str(request.method), path, response.status_code, response.text, response.headers)

    client.hooks["response"].append(record)
    with client:
        yield client


# The document as the app serves it. (Loaded once, from an app whose home is never touched:
# schemathesis' fixture-based lazy loading does not work with pytest 9 yet; each test sends
# its requests to its own app through `session`.)
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", build_app(Path("/nonexistent/sotadb-home"), connect=_never_called)
)


@schema.parametrize()
@SETTINGS
def test_any_project_conforms(case: schemathesis.Case, session: requests.Session) -> None:
    case.call_and_validate(session=session, base_url=BASE_URL)


@schema.parametrize()
@SETTINGS
@pytest.mark.usefixtures("provisioned")
def test_own_project_conforms(case: schemathesis.Case, session: requests.Session) -> None:
    """Every generated request, with `project` set to the token's own project."""
    case.path_parameters = {**(case.path_parameters or {}), "project": PROJECT}
    case.call_and_validate(session=session, base_url=BASE_URL)


@pytest.fixture
def provisioned(api: Harness) -> Iterator[None]:
    """The project's database exists before the test, and some of the test's requests
    succeeded after it, so success bodies were checked too."""
    response = api.client.post(f"/v1/projects/{PROJECT}/database", headers=api.auth(PROJECT))
    assert response.status_code == 200, response.text
    before = len(api.seen)
    yield
    tested = api.seen[before:]
    assert any(seen.status in (200, 201) for seen in tested), "\n".join(
        f"{seen.request} {seen.status}" for seen in tested
    )
