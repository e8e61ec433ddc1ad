"""The bash scripts: valid syntax, inputs only through the environment (pure, plus `bash -n`)."""

from __future__ import annotations

import subprocess

import pytest

from sotadb.backup import checksums, in_place, scripts
from sotadb.backup.catalog import Compression

SCRIPTS = [
    pytest.param(scripts.dump_script(compression=Compression.GZIP, database="my-app"), id="dump"),
    pytest.param(
        scripts.restore_script(compression=Compression.ZSTD, database="my-app", role="app_my-app"),
        id="restore",
    ),
    pytest.param(scripts.verify_script(database="my-app"), id="verify"),
    pytest.param(
        scripts.psql_script(
            scripts.SWAP_SQL,
            database="postgres",
            variables=scripts.restore_database_names("my-app"),
        ),
        id="swap",
    ),
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_valid_bash(script):
    result = subprocess.run(["bash", "-n", "-c", script.text], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_take_the_database_from_the_environment(script):
    assert script.env["PGDATABASE"] in ("my-app", "postgres")
    assert "my-app" not in script.text  # names travel in env/argv, never pasted into bash


def test_psql_variables_travel_in_the_environment():
    script = scripts.psql_script("SELECT :'db'", database="postgres", variables={"db": "a'b c"})
    assert '"--set=db=$SOTADB_VAR_db"' in script.text
    assert script.env["SOTADB_VAR_db"] == "a'b c"
    with pytest.raises(ValueError, match="plain identifier"):
        scripts.psql_script("", database="postgres", variables={"x; rm": "1"})


def test_psql_variables_reach_psql_verbatim(tmp_path):
    fake = tmp_path / "psql"
    fake.write_text('#!/bin/bash\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    script = scripts.psql_script("", database="postgres", variables={"db": "a'b $c"})
    env = {**script.env, "PATH": f"{tmp_path}:/usr/bin:/bin"}
    result = subprocess.run(["bash", "-c", script.text], env=env, capture_output=True, text=True)
    assert "--set=db=a'b $c" in result.stdout.splitlines()


def test_dump_uses_the_snapshot_and_no_owners():
    text = scripts.dump_script(compression=Compression.GZIP, database="x").text
    assert '--snapshot="$snapshot"' in text
    assert "--no-owner --no-privileges" in text
    assert "set -euo pipefail" in text


def test_restore_names_fit_postgres_identifiers():
    longest = "a" * 40
    for name in scripts.restore_database_names(longest).values():
        assert len(name.encode()) <= 63


def test_drill_server_is_throwaway_and_local_only():
    conf = scripts.drill_postgresql_conf()
    assert "fsync = 'off'" in conf
    assert "listen_addresses = '127.0.0.1'" in conf
    assert "wal_level = 'minimal'" in conf
    assert scripts.DRILL_PG_HBA.strip() == "local all postgres peer"


def test_restore_loads_each_table_frozen_and_reads_it_back_once_committed():
    script = scripts.restore_script(compression=Compression.GZIP, database="x", role="app_x")
    assert '"$SOTADB_COPYHASH" freeze-commit' in script.text
    assert "sotadb-loaded" in script.text
    assert checksums.TABLE_PLACEHOLDER in script.env["SOTADB_READ_TABLE"]
    assert checksums.TABLES_PLACEHOLDER in script.env["SOTADB_READ_REST"]
    # the reader never asks a table's size: that waits for the lock of a table being loaded
    assert "pg_relation_size" not in script.env["SOTADB_READ_TABLE"]
    assert "pg_relation_size" not in script.env["SOTADB_READ_REST"]
    in_place_script = in_place.in_place_restore_script(
        compression=Compression.GZIP, database="x", check_file="/tmp/check.sql"
    )
    assert '"$SOTADB_COPYHASH" freeze\n' in in_place_script.text
