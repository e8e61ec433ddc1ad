"""An operator that dies at any moment and failed writes: nothing is lost, nothing is doubled.

The operator is stopped at random points while it reconciles (creations and spec changes),
more than twenty times, and a new one (fresh kopf, fresh registry, nothing remembered but what
the API stores) takes over each time. A watch started before the first operator records every
version of every credentials Secret, so a password that was stored and later replaced would be
seen. Injected 500s on a POST and on a server-side apply are retried until the state converges.
"""

from __future__ import annotations

import functools
import json
import random
import time
from collections.abc import Callable
from typing import Any

import pytest
import urllib3
from kubeemu import Kubectl, KubeEmulator
from operator_harness import (
    NAMESPACE,
    Operator,
    WatchRecorder,
    all_labelled,
    app_password,
    converged,
    expected_objects,
    fail_next,
    mdb,
    mdb_manifest,
    operator_calls,
    operator_writes,
    report,
    secret_value,
    status_of,
    wait_for,
)

from sotadb import names

pytest_plugins = ["conftest_operator"]
pytestmark = pytest.mark.timeout(90)

SEED = 20261125  # fixed, so a failure can be replayed (the timing still varies)
CYCLES = 24


def passwords_seen(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Every PGPASSWORD each app Secret ever held, in order (compared, never printed)."""
    seen: dict[str, list[str]] = {}
    for event in events:
        obj = event.get("object") or {}
        name = (obj.get("metadata") or {}).get("name", "")
        if event.get("type") in ("ADDED", "MODIFIED") and name.endswith("-app"):
            value = secret_value(obj, "PGPASSWORD")
            if value is not None:
                seen.setdefault(name, []).append(value)
    return seen


def apply(kubectl: Kubectl, documents: list[dict[str, Any]]) -> None:
    kubectl(
        "apply",
        "--validate=false",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}),
    )


def all_converged(emu: KubeEmulator, slugs: list[str]) -> bool:
    return all(converged(emu, slug) for slug in slugs)


def test_killed_at_random_points_it_converges_with_the_first_password(
    start_operator: Callable[..., Operator],
    kubectl: Kubectl,
    kube_api: KubeEmulator,
    credentials_history: WatchRecorder,
) -> None:
    rnd = random.Random(SEED)
    writes_since = functools.partial(operator_writes, kube_api)
    operator = start_operator()
    operator.stop()
    started = time.monotonic()

    specs: dict[str, dict[str, Any]] = {}
    interrupted = 0
    progress: list[int] = []  # the operator's writes in each cycle
    kills: list[float] = []  # how long each kill took
    for cycle in range(CYCLES):
        # An action: create one or two databases (always in the first cycles, up to five in
        # all), or change the spec of a random few (pool size; storage grows every 4th cycle).
        if len(specs) < 5 and (cycle < 3 or rnd.random() < 0.3):
            slugs = [f"db-{len(specs) + i}" for i in range(rnd.randint(1, 2))]
        else:
            slugs = rnd.sample(sorted(specs), k=rnd.randint(1, len(specs)))
        for slug in slugs:
            size = int(specs.get(slug, {}).get("storage", {}).get("size", "1Gi")[:-2])
            if cycle % 4 == 0:  # storage may only grow (a shrink is refused: tested elsewhere)
                size = max(size, rnd.randint(1, 3))
            specs[slug] = {
                "pool": {"defaultPoolSize": rnd.randint(5, 40)},
                "storage": {"size": f"{size}Gi"},
            }
        documents = [mdb_manifest(slug, specs[slug]) for slug in slugs]
        # Half the time the change waits for the operator (its startup resumes it); half the
        # time it arrives while the operator runs (a watch event).
        mark = kube_api.mark()
        before = rnd.random() < 0.5
        if before:
            apply(kubectl, documents)
        operator.start()
        if not before:
            apply(kubectl, documents)
        # Kill it after a random number of its writes (a creation takes 15, a pool change 4),
        # or after at most 300 ms, give or take a few milliseconds.
        target = rnd.randint(0, 4 * len(documents))
        deadline = time.monotonic() + rnd.uniform(0.05, 0.3)
        while time.monotonic() < deadline and len(writes_since(mark)) < target:
            time.sleep(0.002)
        time.sleep(rnd.uniform(0.0, 0.01))
        killing = time.monotonic()
        operator.kill()
        kills.append(time.monotonic() - killing)
        progress.append(len(writes_since(mark)))
        interrupted += not all_converged(kube_api, sorted(specs))
    cycles_took = time.monotonic() - started

    # Then one operator runs to the end.
    operator.start()
    final = sorted(specs)
    wait_for(lambda: all_converged(kube_api, final), timeout=40, what="convergence")
    settled = time.monotonic() - started
    events = credentials_history.stop()
    report(
        f"restarts: {operator.starts} operators, {CYCLES} killed at random points, "
        f"{interrupted} of them mid-reconcile; writes per cycle {progress}; "
        f"cycles {cycles_took:.1f}s (kills took {sum(kills):.1f}s, at most {max(kills):.2f}s), "
        f"converged after {settled:.1f}s"
    )
    assert interrupted >= CYCLES // 3, "too few kills landed mid-reconcile to prove anything"

    # The same password as the first one ever stored, and never another one in between.
    seen = passwords_seen(events)
    assert sorted(seen) == sorted(names.app_secret_name(slug) for slug in final)
    for slug in final:
        history = seen[names.app_secret_name(slug)]
        assert (len(set(history)) == 1) is True, f"{slug}: the password changed"
        assert (app_password(kube_api, slug) == history[0]) is True, slug

    # Exactly one of each object, named as rendered, and nothing else.
    labelled = all_labelled(kube_api)
    assert len(labelled) == len(set(labelled))
    expected = sorted(
        (d["kind"], d["metadata"]["name"])
        for slug in final
        for d in expected_objects(kube_api, slug)
    )
    assert labelled == expected

    # Status converged on the last spec of each.
    for slug in final:
        body = mdb(kube_api, slug)
        assert body is not None
        status = status_of(kube_api, slug)
        assert status["phase"] == "Provisioning"
        assert status["observedGeneration"] == body["metadata"]["generation"]
        assert (
            status["appliedSpec"]["pool"]["defaultPoolSize"]
            == specs[slug]["pool"]["defaultPoolSize"]
        )
        ini = kube_api.get("configmaps", names.pooler_config_name(slug), NAMESPACE)
        assert ini is not None
        pool = specs[slug]["pool"]["defaultPoolSize"]
        assert f"default_pool_size = {pool}\n" in ini["data"]["pgbouncer.ini"]


def test_failed_writes_are_retried_until_the_state_converges(
    start_operator: Callable[..., Operator],
    kubectl: Kubectl,
    kube_api: KubeEmulator,
    credentials_history: WatchRecorder,
) -> None:
    fail_next(kube_api, "create v1/secrets")  # the app Secret's POST
    fail_next(kube_api, "patch apps/v1/statefulsets")  # a server-side apply
    start_operator()
    mark = kube_api.mark()
    apply(kubectl, [mdb_manifest("my-app")])
    wait_for(lambda: converged(kube_api, "my-app"), what="convergence")
    events = credentials_history.stop()

    calls = operator_calls(kube_api, mark)
    failed = [(c.verb, c.resource) for c in calls if c.status == 500]
    assert failed == [("create", "secrets"), ("patch", "statefulsets.apps")]
    posts = [c.status for c in calls if (c.verb, c.resource) == ("create", "secrets")]
    assert posts[0] == 500
    assert posts[-1] == 201
    assert [c.status for c in calls if c.resource == "statefulsets.apps"][-1] in (200, 201)

    history = passwords_seen(events)["sota-db-my-app-app"]
    assert (len(set(history)) == 1) is True  # the retry after the failed SSA adopted it
    labelled = all_labelled(kube_api)
    assert labelled == sorted(
        (d["kind"], d["metadata"]["name"]) for d in expected_objects(kube_api, "my-app")
    )
    assert status_of(kube_api, "my-app")["phase"] == "Provisioning"


def test_a_broken_connection_is_retried_promptly(
    start_operator: Callable[..., Operator], kubectl: Kubectl, kube_api: KubeEmulator
) -> None:
    """What the `kubernetes` client raises when the API server drops the connection (urllib3
    retried it already) is retryable, as a 5xx: retried after RETRY_DELAY, not after kopf's
    default of 60 seconds for an unexpected error."""
    operator = start_operator()
    reset = ConnectionResetError(104, "Connection reset by peer")
    operator.faults += [
        urllib3.exceptions.ProtocolError("Connection aborted.", reset),
        urllib3.exceptions.MaxRetryError(None, "/api/v1", reason=reset),  # type: ignore[arg-type]
    ]
    apply(kubectl, [mdb_manifest("my-app")])
    wait_for(lambda: converged(kube_api, "my-app"), timeout=10, what="convergence")
    assert operator.faults == []
