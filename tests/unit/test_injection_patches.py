"""sotadb.render.injection: the annotation's meaning and the patches that inject and remove.

Patches are applied with the emulator's strategic merge patch (kubeemu.patching), which merges
containers, initContainers and env by name and replaces envFrom, as the API server does.
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
import subprocess
import time
from typing import Any

import kubernetes_validate
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from kubeemu.patching import strategic_merge_patch

from sotadb import names
from sotadb.errors import InvalidSpec
from sotadb.render import injection
from sotadb.render.injection import Injected, InvalidAnnotation

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "manifests" / "examples" / "app-deployment.yaml"
SECRET = {"secretRef": {"name": "sota-db-my-app-app"}}
OTHER_SECRET = {"secretRef": {"name": "sota-db-other-app"}}
LABEL = "db.sota.io/my-app"


def workload(
    template_spec: dict[str, Any] | None = None,
    *,
    database: str | None = "my-app",
    name: str = "web",
    labels: dict[str, str] | None = None,
    kind: str = "Deployment",
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "shop", "resourceVersion": "7"}
    if database is not None:
        metadata["annotations"] = {injection.ANNOTATION_DATABASE: database}
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels if labels is not None else {"app": name}},
                "spec": template_spec or {"containers": [{"name": "app", "image": "app:1"}]},
            },
        },
    }


def annotate(body: dict[str, Any], database: str | None) -> dict[str, Any]:
    """The workload with `sota.io/database` set to `database` (None: removed)."""
    result = copy.deepcopy(body)
    annotations = result["metadata"].setdefault("annotations", {})
    annotations.pop(injection.ANNOTATION_DATABASE, None)
    if database is not None:
        annotations[injection.ANNOTATION_DATABASE] = database
    return result


def converge(body: dict[str, Any]) -> dict[str, Any]:
    """Apply the plan's patch as the API server would; the result must need no further patch."""
    patch = injection.plan(body).patch
    result = body if patch is None else strategic_merge_patch(body, patch)
    assert injection.plan(result).patch is None, "not idempotent"
    return result


def template_of(body: dict[str, Any]) -> dict[str, Any]:
    return dict(body["spec"]["template"])


def containers(body: dict[str, Any], field: str = "containers") -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in body["spec"]["template"]["spec"].get(field) or []}


# ---------------------------------------------------------------- the annotation


@pytest.mark.parametrize(
    ("name", "annotations", "expected"),
    [
        ("web", {"sota.io/database": "true"}, "web"),
        ("web", {"sota.io/database": "orders"}, "orders"),
        ("web", {"sota.io/database": "false"}, None),
        ("web", {}, None),
        ("web", {"other": "x"}, None),
        ("a" * 40, {"sota.io/database": "true"}, "a" * 40),
    ],
    ids=["true-names-it-after-the-workload", "a-name", "false", "absent", "other-only", "max-len"],
)
def test_the_annotation_names_the_database(
    name: str, annotations: dict[str, str], expected: str | None
) -> None:
    body = {"metadata": {"name": name, "annotations": annotations}}
    assert injection.requested_database(body) == expected


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("web.v2", "true", "the workload's name 'web.v2' is no valid database name"),
        ("2web", "true", "the workload's name '2web' is no valid database name"),
        ("a" * 41, "true", "is no valid database name"),
        ("web", "My_DB", "'My_DB' is no valid database name"),
        ("web", "", "'' is no valid database name"),
        ("web", "ends-", "'ends-' is no valid database name"),
        ("web", "True", "'True' is no valid database name"),
    ],
    ids=[
        "dotted-name",
        "leading-digit",
        "too-long",
        "uppercase",
        "empty",
        "trailing-hyphen",
        "True",
    ],
)
def test_an_invalid_value_says_what_is_wrong_and_how_to_fix_it(
    name: str, value: str, says: str
) -> None:
    body = workload(name=name, database=value)
    with pytest.raises(InvalidAnnotation) as raised:
        injection.plan(body)
    assert isinstance(raised.value, InvalidSpec)
    (problem,) = raised.value.problems
    assert problem.field == "metadata.annotations[sota.io/database]"
    assert says in problem.problem
    assert "1-40 lowercase letters" in problem.fix


def test_the_slug_rule_is_the_database_name_rule() -> None:
    assert injection.is_slug("my-app")
    assert not injection.is_slug("a" * (names.SLUG_MAX_LENGTH + 1))
    assert injection.is_slug("a" * names.SLUG_MAX_LENGTH)
    assert names.SLUG_RE.pattern == names.SLUG_PATTERN


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('{"database":"my-app","envFrom":["app"],"label":true}', Injected("my-app", ("app",))),
        ('{"database":"my-app","envFrom":[],"label":false}', Injected("my-app", (), False)),
        ('{"database":"my-app"}', Injected("my-app", (), True)),
        ("my-app", None),
        ("{}", None),
        ('{"database":"Bad_Name"}', None),
        ('{"database":"x","envFrom":"app"}', None),
        (None, None),
    ],
    ids=[
        "full",
        "no-label",
        "minimal",
        "not-json",
        "no-database",
        "bad-database",
        "bad-list",
        "none",
    ],
)
def test_the_record_of_what_was_injected(value: str | None, expected: Injected | None) -> None:
    assert Injected.decode(value) == expected
    if expected is not None:
        assert Injected.decode(expected.encode()) == expected


# ---------------------------------------------------------------- injecting


def test_the_injection_patch_for_a_plain_deployment() -> None:
    patch = injection.plan(workload()).patch
    assert patch == {
        "spec": {
            "template": {
                "metadata": {"labels": {LABEL: "direct"}},
                "spec": {
                    "containers": [{"name": "app", "envFrom": [SECRET]}],
                    "initContainers": [injection.wait_container("my-app")],
                },
            }
        },
        "metadata": {
            "annotations": {
                "sota.io/injected": '{"database":"my-app","envFrom":["app"],"label":true}'
            }
        },
    }


def test_injected_template_takes_env_from_the_app_secret_first_and_waits_for_the_database() -> None:
    own = [{"configMapRef": {"name": "settings"}}, {"secretRef": {"name": "api-keys"}}]
    body = workload(
        {
            "initContainers": [
                {"name": "mesh", "image": "proxy:1", "restartPolicy": "Always"},
                {"name": "migrate", "image": "app:1", "envFrom": own},
            ],
            "containers": [
                {
                    "name": "app",
                    "image": "app:1",
                    "envFrom": own,
                    "env": [{"name": "A", "value": "1"}],
                },
                {"name": "worker", "image": "app:1"},
            ],
        }
    )
    patch = injection.plan(body).patch
    assert patch is not None
    # Ours runs after the native sidecar, before the app's own init containers.
    assert patch["spec"]["template"]["spec"]["$setElementOrder/initContainers"] == [
        {"name": "mesh"},
        {"name": injection.WAIT_CONTAINER},
        {"name": "migrate"},
    ]
    result = converge(body)
    assert containers(result)["app"]["envFrom"] == [SECRET, *own]
    assert containers(result)["app"]["env"] == [{"name": "A", "value": "1"}]
    assert containers(result)["worker"]["envFrom"] == [SECRET]
    init = containers(result, "initContainers")
    assert init["migrate"]["envFrom"] == [SECRET, *own]
    assert init["mesh"]["envFrom"] == [SECRET]  # every container of the app's, sidecars too
    assert init[injection.WAIT_CONTAINER] == injection.wait_container("my-app")
    assert template_of(result)["metadata"]["labels"] == {"app": "web", LABEL: "direct"}
    assert injection.injected(result) == Injected(
        "my-app", ("app", "mesh", "migrate", "worker"), label=True
    )


def test_a_container_that_reads_the_secret_already_is_left_alone() -> None:
    prefixed = {"secretRef": {"name": "sota-db-my-app-app"}, "prefix": "DB_"}
    body = workload(
        {
            "containers": [
                {"name": "app", "image": "app:1", "envFrom": [SECRET]},
                {"name": "other", "image": "app:1", "envFrom": [prefixed]},
            ]
        },
        labels={"app": "web", LABEL: "direct"},
    )
    patch = injection.plan(body).patch
    assert patch is not None
    assert "containers" not in patch["spec"]["template"]["spec"]
    assert "metadata" not in patch["spec"]["template"]  # the label is there already
    result = converge(body)
    assert containers(result)["other"]["envFrom"] == [prefixed]
    assert injection.injected(result) == Injected("my-app", (), label=False)


def test_the_wait_container_is_restricted_small_and_reads_the_app_secret() -> None:
    wait = injection.wait_container("my-app")
    assert wait["name"] == "sota-wait-for-database"
    assert wait["image"] == names.POOLER_IMAGE
    assert wait["envFrom"] == [SECRET]
    assert wait["command"][:2] == ["/bin/sh", "-c"]
    assert "psql \"$DATABASE_URL\" -XtAc 'select 1'" in wait["command"][2]
    assert wait["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert wait["resources"] == {
        "requests": {"cpu": "10m", "memory": "16Mi"},
        "limits": {"memory": "64Mi"},
    }
    assert injection.wait_container("my-app", "registry.example/pgbouncer:1")["image"] == (
        "registry.example/pgbouncer:1"
    )


# ---------------------------------------------------------------- no difference, no patch


def test_server_defaults_on_our_init_container_are_no_difference() -> None:
    body = converge(workload())
    spec = body["spec"]["template"]["spec"]
    (wait,) = spec["initContainers"]
    wait["terminationMessagePath"] = "/dev/termination-log"
    wait["securityContext"]["privileged"] = False
    body["metadata"]["resourceVersion"] = "8"
    assert injection.plan(body).patch is None


def test_a_changed_init_container_is_patched_whole_and_only_it() -> None:
    body = converge(workload())
    (wait,) = body["spec"]["template"]["spec"]["initContainers"]
    wait["image"] = "sotadb/pgbouncer:1.23"  # an older operator's, say
    del wait["resources"]
    patch = injection.plan(body).patch
    assert patch == {
        "spec": {"template": {"spec": {"initContainers": [injection.wait_container("my-app")]}}}
    }


def test_a_dropped_entry_is_added_back_in_one_patch() -> None:
    """What a client-side apply of a manifest that sets envFrom itself does to our entry."""
    own = [{"configMapRef": {"name": "settings"}}]
    body = converge(workload({"containers": [{"name": "app", "image": "a", "envFrom": own}]}))
    applied = strategic_merge_patch(
        body, {"spec": {"template": {"spec": {"containers": [{"name": "app", "envFrom": own}]}}}}
    )
    assert injection.plan(applied).patch == {
        "spec": {"template": {"spec": {"containers": [{"name": "app", "envFrom": [SECRET, *own]}]}}}
    }


# ---------------------------------------------------------------- removing


@pytest.mark.parametrize(
    "template_spec",
    [
        {"containers": [{"name": "app", "image": "a"}]},
        {
            "initContainers": [{"name": "migrate", "image": "a", "envFrom": [OTHER_SECRET]}],
            "containers": [
                {"name": "app", "image": "a", "envFrom": [{"configMapRef": {"name": "c"}}]},
                {"name": "reads-it-itself", "image": "a", "envFrom": [SECRET]},
            ],
        },
    ],
    ids=["plain", "own-env-from-and-init-containers"],
)
@pytest.mark.parametrize(
    "labels",
    [{"app": "web"}, {"app": "web", "tier": "api", LABEL: "direct"}],
    ids=["own-labels", "own-direct-label"],
)
def test_removal_restores_the_template_exactly(
    template_spec: dict[str, Any], labels: dict[str, str]
) -> None:
    original = workload(template_spec, labels=labels)
    injected = converge(original)
    assert injected["spec"]["template"] != original["spec"]["template"]
    removal = injection.removal_patch(injected)
    assert removal is not None
    assert removal["metadata"] == {"annotations": {"sota.io/injected": None}}
    removed = converge(annotate(injected, None))
    assert removed["spec"]["template"] == original["spec"]["template"]
    assert injection.ANNOTATION_INJECTED not in removed["metadata"]["annotations"]


def test_removal_patch_deletes_our_init_container_by_name_and_keeps_the_others() -> None:
    body = converge(
        workload(
            {
                "initContainers": [{"name": "m", "image": "a"}],
                "containers": [{"name": "app", "image": "a"}],
            }
        )
    )
    patch = injection.removal_patch(body)
    assert patch is not None
    init = patch["spec"]["template"]["spec"]["initContainers"]
    assert {"name": injection.WAIT_CONTAINER, "$patch": "delete"} in init
    assert patch["spec"]["template"]["metadata"] == {"labels": {LABEL: None}}
    only_ours = converge(workload())
    patch = injection.removal_patch(only_ours)
    assert patch is not None
    assert patch["spec"]["template"]["spec"]["initContainers"] is None


def test_switching_databases_is_one_patch_to_the_other_injection() -> None:
    original = workload({"containers": [{"name": "app", "image": "a", "envFrom": [OTHER_SECRET]}]})
    first = converge(annotate(original, "first"))
    second = converge(annotate(first, "second"))
    direct = converge(annotate(original, "second"))
    assert second["spec"]["template"] == direct["spec"]["template"]
    assert injection.injected(second) == injection.injected(direct)
    assert "sota-db-first-app" not in json.dumps(second["spec"])


# ---------------------------------------------------------------- properties

CONTAINER_NAMES = ("app", "web", "worker", "migrate", "proxy", "init")
SOURCES = (
    {"configMapRef": {"name": "settings"}},
    {"secretRef": {"name": "api-keys"}},
    SECRET,
    {"secretRef": {"name": "sota-db-my-app-app"}, "prefix": "DB_"},
    OTHER_SECRET,
)


@st.composite
def templates(draw: st.DrawFn) -> dict[str, Any]:
    names_ = draw(st.lists(st.sampled_from(CONTAINER_NAMES), min_size=1, max_size=5, unique=True))
    split = draw(st.integers(0, len(names_) - 1))

    def container(name: str, init: bool) -> dict[str, Any]:
        result: dict[str, Any] = {"name": name, "image": "app:1"}
        sources = draw(st.lists(st.sampled_from(SOURCES), max_size=3, unique_by=json.dumps))
        if sources:
            result["envFrom"] = sources
        if init and draw(st.booleans()):
            result["restartPolicy"] = "Always"
        return result

    spec: dict[str, Any] = {"containers": [container(n, False) for n in names_[split:]]}
    if split:
        spec["initContainers"] = [container(n, True) for n in names_[:split]]
    return spec


@settings(max_examples=150, deadline=None)
@given(
    template_spec=templates(),
    own_label=st.booleans(),
    database=st.sampled_from(["my-app", "true"]),
)
def test_injection_converges_in_one_patch_and_removal_restores_the_template(
    template_spec: dict[str, Any], own_label: bool, database: str
) -> None:
    labels = {"app": "my-app", **({LABEL: "direct"} if own_label else {})}
    original = workload(template_spec, labels=labels, name="my-app", database=database)
    injected = converge(original)  # asserts: one patch, then none
    spec = injected["spec"]["template"]["spec"]
    for container in [*spec["containers"], *spec["initContainers"]]:
        assert any(
            (s.get("secretRef") or {}).get("name") == "sota-db-my-app-app"
            for s in container.get("envFrom") or []
        ), container["name"]
    assert [c["name"] for c in spec["initContainers"]].count(injection.WAIT_CONTAINER) == 1
    assert injected["spec"]["template"]["metadata"]["labels"][LABEL] == "direct"
    removed = converge(annotate(injected, None))
    assert removed["spec"]["template"] == original["spec"]["template"]


# ---------------------------------------------------------------- the wait script, run


def run_wait_script(tmp_path: pathlib.Path, succeed_at: int, attempts: int) -> Any:
    """Run the init container's script under /bin/sh with a stand-in psql that fails until its
    `succeed_at`-th call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    psql = bin_dir / "psql"
    psql.write_text(
        "#!/bin/sh\n"
        'echo "$@" >> "$CALLS"\n'
        'n=$(wc -l < "$CALLS")\n'
        'if [ "$n" -ge "$SUCCEED_AT" ]; then echo 1; exit 0; fi\n'
        'echo "psql: error: connection to server at \\"sota-pgbouncer-my-app\\" failed:'
        ' Connection refused" >&2\n'
        "exit 2\n"
    )
    psql.chmod(0o755)
    calls = tmp_path / "calls"
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "CALLS": str(calls),
        "SUCCEED_AT": str(succeed_at),
        "DATABASE_URL": "postgresql://app_my-app:secret@sota-pgbouncer-my-app:5432/my-app",
    }
    script = injection.wait_script(attempts=attempts, interval=0)
    result = subprocess.run(
        ["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    return result, calls.read_text().splitlines()


def test_the_wait_script_exits_once_the_database_answers(tmp_path: pathlib.Path) -> None:
    result, calls = run_wait_script(tmp_path, succeed_at=3, attempts=5)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "sotadb: the database answers (attempt 3)\n"
    assert (
        calls
        == ["postgresql://app_my-app:secret@sota-pgbouncer-my-app:5432/my-app -XtAc select 1"] * 3
    )


def test_the_wait_script_gives_up_after_its_attempts_with_the_last_error(
    tmp_path: pathlib.Path,
) -> None:
    result, calls = run_wait_script(tmp_path, succeed_at=100, attempts=4)
    assert result.returncode == 1
    assert len(calls) == 4
    assert "did not answer in 4 attempts" in result.stderr
    assert "Connection refused" in result.stderr
    assert "secret" not in result.stdout + result.stderr


def test_a_query_pgbouncer_holds_is_cut_short_and_the_wait_goes_on(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PgBouncer accepts while PostgreSQL is down and holds the query (up to its 120 s
    query_wait_timeout): each attempt has its own bound, so the attempts stay bounded."""
    monkeypatch.setattr(injection, "WAIT_QUERY_TIMEOUT", 1)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "psql").write_text("#!/bin/sh\nexec sleep 60\n")
    (bin_dir / "psql").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "DATABASE_URL": "postgresql://x@h/d"}
    started = time.monotonic()
    result = subprocess.run(
        ["/bin/sh", "-c", injection.wait_script(attempts=2, interval=0)],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "did not answer in 2 attempts: no answer within 1 s" in result.stderr
    assert time.monotonic() - started < 20


# ---------------------------------------------------------------- valid Kubernetes


def example() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return document


def test_the_example_app_asks_for_its_database_with_the_annotation() -> None:
    document = example()
    assert document["kind"] == "Deployment"
    assert document["metadata"]["annotations"] == {"sota.io/database": "my-app"}
    assert injection.requested_database(document) == "my-app"


@pytest.mark.parametrize(
    "document",
    [
        example(),
        workload(
            {
                "containers": [{"name": "app", "image": "a"}],
                "initContainers": [{"name": "m", "image": "a", "envFrom": [OTHER_SECRET]}],
            },
            kind="StatefulSet",
            database="true",
        ),
    ],
    ids=["the-example-deployment", "a-statefulset"],
)
def test_workloads_stay_valid_kubernetes_objects_once_injected(document: dict[str, Any]) -> None:
    document = copy.deepcopy(document)
    document["metadata"].pop("resourceVersion", None)
    if document["kind"] == "StatefulSet":
        document["spec"]["serviceName"] = "web"
    kubernetes_validate.validate(document, "1.33", strict=True)
    injected = converge(document)
    kubernetes_validate.validate(injected, "1.33", strict=True)
    kubernetes_validate.validate(converge(annotate(injected, None)), "1.33", strict=True)
