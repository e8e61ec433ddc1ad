"""Every derived name is pinned here, and the longest slug fits every Kubernetes limit."""

from __future__ import annotations

import inspect
import re
from typing import Any

import kubernetes_validate
import pytest

from sotadb import names
from sotadb.credentials import Credentials
from sotadb.render import render_objects
from sotadb.spec import parse_database

LONGEST_SLUG = "a" * names.SLUG_MAX_LENGTH


@pytest.mark.parametrize(
    ("derive", "expected"),
    [
        pytest.param(names.postgres_name, "sota-db-my-app", id="postgres"),
        pytest.param(names.pooler_name, "sota-pgbouncer-my-app", id="pooler"),
        pytest.param(names.backup_cronjob_name, "sota-backup-my-app", id="cronjob"),
        pytest.param(names.network_name, "sota-net-my-app", id="docker-network"),
        pytest.param(names.app_secret_name, "sota-db-my-app-app", id="app-secret"),
        pytest.param(names.auth_secret_name, "sota-db-my-app-auth", id="auth-secret"),
        pytest.param(names.role_name, "app_my-app", id="role"),
        pytest.param(names.database_name, "my-app", id="database"),
        pytest.param(names.data_claim_name, "data-sota-db-my-app-0", id="data-claim"),
        pytest.param(names.direct_access_label, "db.sota.io/my-app", id="direct-label"),
    ],
)
def test_names_follow_the_seed(derive, expected):
    assert derive("my-app") == expected


# (name, limit): CronJob names leave 11 characters for their Jobs' suffix; a StatefulSet's pods
# get a controller-revision-hash label "<name>-<10 chars>" that must stay a 63-character label.
LIMITS = [
    pytest.param(names.backup_cronjob_name(LONGEST_SLUG), 52, id="cronjob"),
    pytest.param(names.postgres_name(LONGEST_SLUG) + "-" + "x" * 10, 63, id="revision-label"),
    pytest.param(names.postgres_name(LONGEST_SLUG) + "-0", 63, id="pod-hostname"),
    pytest.param(names.pooler_name(LONGEST_SLUG), 63, id="pooler-service"),
    pytest.param(names.postgres_name(LONGEST_SLUG), 63, id="postgres-service"),
    pytest.param(names.app_secret_name(LONGEST_SLUG), 253, id="app-secret"),
    pytest.param(names.data_claim_name(LONGEST_SLUG), 63, id="data-claim"),
    pytest.param(names.backups_volume_name(LONGEST_SLUG), 63, id="backups-claim"),
    pytest.param(names.pooler_config_name(LONGEST_SLUG), 253, id="pooler-configmap"),
    pytest.param(names.direct_access_label(LONGEST_SLUG).split("/")[1], 63, id="label-name"),
    pytest.param(names.role_name(LONGEST_SLUG), 63, id="postgres-role"),  # NAMEDATALEN - 1
]


@pytest.mark.parametrize(("name", "limit"), LIMITS)
def test_longest_slug_fits_every_limit(name, limit):
    assert len(name) <= limit


def test_one_more_character_would_not_fit_the_cronjob():
    assert len(names.backup_cronjob_name(LONGEST_SLUG + "a")) > 52


def test_common_labels_carry_the_documented_keys():
    assert names.common_labels("my-app", names.COMPONENT_POSTGRES) == {
        "app.kubernetes.io/name": "sotadb",
        "app.kubernetes.io/instance": "my-app",
        "app.kubernetes.io/component": "postgres",
        "app.kubernetes.io/managed-by": "sotadb",
    }


def test_selector_labels_are_a_subset_of_the_common_labels():
    common = names.common_labels("x", names.COMPONENT_POOLER)
    assert names.selector_labels("x", names.COMPONENT_POOLER).items() <= common.items()


# Every name derived from a slug alone, with the limit it must keep and why. A new function in
# names.py taking a slug fails test_every_derived_name_is_in_the_table until it is added here.
SLUG_NAME_LIMITS = {
    "app_secret_name": 253,  # Secret: DNS subdomain
    "auth_secret_name": 253,
    "postgres_config_name": 253,  # ConfigMap: DNS subdomain
    "pooler_config_name": 253,
    "backup_cronjob_name": 52,  # CronJob: its Jobs append "-<minutes>"
    "postgres_name": 52,  # StatefulSet: its revisions' label value is "<name>-<10 chars>"
    "pooler_name": 63,  # Service: DNS-1035 label, and the URL's host
    "backups_volume_name": 63,
    "data_claim_name": 63,
    "data_volume_name": 63,  # Docker volume
    "network_name": 63,  # Docker network
    "database_name": 63,  # PostgreSQL: NAMEDATALEN - 1
    "role_name": 63,
    "direct_access_label": 63,  # the label key's name part (checked below)
}


def slug_functions() -> dict[str, Any]:
    return {
        name: function
        for name, function in inspect.getmembers(names, inspect.isfunction)
        if function.__module__ == names.__name__
        and not name.startswith("_")
        and list(inspect.signature(function).parameters) == ["slug"]
    }


def test_every_derived_name_is_in_the_table():
    assert set(slug_functions()) == set(SLUG_NAME_LIMITS)


@pytest.mark.parametrize(("function", "limit"), sorted(SLUG_NAME_LIMITS.items()))
def test_every_derived_name_of_the_longest_slug_fits(function, limit):
    name = slug_functions()[function](LONGEST_SLUG)
    if function == "direct_access_label":
        prefix, name = name.split("/")
        assert len(prefix) <= 253
    assert len(name) <= limit
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9_.]*[a-z0-9])?", name), name


def test_names_of_backups_and_jobs_fit_for_the_longest_slug_and_backup_name():
    assert len(names.final_backup_name(LONGEST_SLUG, "ffffffff-ffff-ffff-ffff-ffffffffffff")) <= 63
    cron_run = f"{names.backup_cronjob_name(LONGEST_SLUG)}-{'9' * 10}"
    assert len(cron_run) <= names.OBJECT_NAME_MAX_LENGTH  # a scheduled DatabaseBackup's name
    longest_backup = "b" * names.OBJECT_NAME_MAX_LENGTH
    for job_name in (names.backup_job_name, names.restore_job_name, names.forget_job_name):
        assert len(job_name(longest_backup)) <= 63
        assert job_name(longest_backup) != job_name(longest_backup[:-1] + "c")


# Kinds whose names sotadb renders, with their limits (see SLUG_NAME_LIMITS for why).
KIND_NAME_LIMITS = {"Service": 63, "StatefulSet": 52, "CronJob": 52}


@pytest.mark.parametrize("version", ["1.30", "1.33"])
def test_every_rendered_object_of_the_longest_slug_fits_and_validates(version):
    db = parse_database(
        {"apiVersion": "sota.io/v1", "kind": "ManagedDatabase", "metadata": {"name": LONGEST_SLUG}}
    )
    for document in render_objects(db, Credentials.generate()):
        metadata = document["metadata"]
        assert len(metadata["name"]) <= KIND_NAME_LIMITS.get(document["kind"], 253)
        assert all(len(value) <= 63 for value in metadata["labels"].values())
        kubernetes_validate.validate(document, version, strict=True)
