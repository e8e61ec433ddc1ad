"""Every derived name is pinned here, and the longest slug fits every Kubernetes limit."""

from __future__ import annotations

import pytest

from sotadb import names

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
