"""Backup locations: parsing `SOTADB_BACKUP_LOCATION`, the S3 key layout, and messages that
name the setting to fix. Pure: no store is touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from sotadb import spec
from sotadb.backup.store import BackupStore
from sotadb.backup.stores import (
    DEFAULT_REGION,
    DirectoryLocation,
    InvalidLocation,
    S3Location,
    open_store,
    parse_location,
)

ENV = {"SOTADB_S3_ENDPOINT": "http://minio.storage:9000", "AWS_DEFAULT_REGION": "eu-central-1"}


@pytest.mark.parametrize(
    ("location", "env", "expected"),
    [
        pytest.param(
            "/var/lib/sotadb/backups",
            {},
            DirectoryLocation(Path("/var/lib/sotadb/backups")),
            id="volume",
        ),
        pytest.param("backups", {}, DirectoryLocation(Path("backups")), id="relative-dir"),
        pytest.param("s3://my-backups", {}, S3Location("my-backups"), id="bucket-only"),
        pytest.param("s3://my-backups/", {}, S3Location("my-backups"), id="bucket-slash"),
        pytest.param(
            "s3://my-backups/prod/shop/",
            ENV,
            S3Location("my-backups", "prod/shop", "http://minio.storage:9000", "eu-central-1"),
            id="prefix-endpoint-region",
        ),
        pytest.param(
            "s3://b.example.com/x",
            {"SOTADB_S3_ENDPOINT": "", "AWS_DEFAULT_REGION": ""},
            S3Location("b.example.com", "x", None, DEFAULT_REGION),
            id="empty-env-means-unset",
        ),
    ],
)
def test_locations_parse(location: str, env: dict[str, str], expected: object) -> None:
    assert parse_location(location, env) == expected


@pytest.mark.parametrize(
    ("location", "env", "names"),
    [
        pytest.param("", {}, ["SOTADB_BACKUP_LOCATION"], id="empty"),
        pytest.param("gs://bucket/x", {}, ["gs://", "s3://bucket/prefix"], id="other-scheme"),
        pytest.param("s3://", {}, ["spec.backups.s3.bucket"], id="no-bucket"),
        pytest.param("s3://My_Bucket/x", {}, ["spec.backups.s3.bucket", "my-backups"], id="bucket"),
        pytest.param("s3://ab", {}, ["spec.backups.s3.bucket", "3-63"], id="bucket-short"),
        pytest.param("s3://a..b", {}, ["spec.backups.s3.bucket"], id="bucket-double-dot"),
        pytest.param("s3://bucket/a//b", {}, ["spec.backups.s3.prefix"], id="prefix-double-slash"),
        pytest.param("s3://bucket/a b", {}, ["spec.backups.s3.prefix"], id="prefix-space"),
        pytest.param(
            "s3://bucket",
            {"SOTADB_S3_ENDPOINT": "minio:9000"},
            ["spec.backups.s3.endpoint"],
            id="endpoint-no-scheme",
        ),
        pytest.param(
            "s3://bucket", {"AWS_DEFAULT_REGION": "EU 1"}, ["spec.backups.s3.region"], id="region"
        ),
    ],
)
def test_bad_locations_name_the_setting_and_the_fix(
    location: str, env: dict[str, str], names: list[str]
) -> None:
    with pytest.raises(InvalidLocation) as refused:
        parse_location(location, env)
    message = str(refused.value)
    assert "fix:" in message
    for name in names:
        assert name in message


def test_an_endpoint_with_keys_in_it_is_refused_without_repeating_them() -> None:
    env = {"SOTADB_S3_ENDPOINT": "http://AKIAEXAMPLE:hunter2@minio:9000"}
    with pytest.raises(InvalidLocation) as refused:
        parse_location("s3://bucket", env)
    assert "hunter2" not in str(refused.value)
    assert "AKIAEXAMPLE" not in str(refused.value)


def test_s3_keys_are_the_file_stores_layout_under_the_prefix() -> None:
    with_prefix = S3Location("b", "prod/shop")
    assert with_prefix.key("my-app", "my-app-20261125T030700Z.sql.gz") == (
        "prod/shop/my-app/my-app-20261125T030700Z.sql.gz"
    )
    assert with_prefix.key("my-app", "my-app-20261125T030700Z.json") == (
        "prod/shop/my-app/my-app-20261125T030700Z.json"
    )
    assert with_prefix.directory("my-app") == "prod/shop/my-app/"
    assert with_prefix.url == "s3://b/prod/shop"
    top = S3Location("b")
    assert top.key("my-app", "x.json") == "my-app/x.json"
    assert top.url == "s3://b"
    assert top.object_url(top.key("my-app", "x.json")) == "s3://b/my-app/x.json"


def test_the_spec_gives_the_location_a_job_parses_back() -> None:
    s3 = spec.S3Spec.model_validate(
        {"bucket": "my-backups", "prefix": "prod/shop", "credentialsSecret": "k"}
    )
    assert s3.location == "s3://my-backups/prod/shop"
    assert parse_location(s3.location, {}) == S3Location("my-backups", "prod/shop")
    bare = spec.S3Spec.model_validate({"bucket": "my-backups", "credentialsSecret": "k"})
    assert bare.location == "s3://my-backups"
    assert (bare.region, bare.prefix, bare.endpoint) == (DEFAULT_REGION, "", None)


def test_open_store_gives_the_directory_store_for_a_path(tmp_path: Path) -> None:
    store = open_store(str(tmp_path), {})
    assert isinstance(store, BackupStore)
    assert store.root == tmp_path
