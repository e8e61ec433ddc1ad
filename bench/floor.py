"""The floor for provisioning: the same image doing only initdb, start, first query.

Timed on this host's clock from the container create call to the first successful
`SELECT 1` over TCP, polled from the host the way `DockerRuntime.wait_until_ready` polls
(look the address up, connect with a 2 s timeout, retry after 0.1 s).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Final

import docker
import psycopg

from bench import timeline
from bench.harness import POSTGRES_IMAGE, Bench, BenchError
from sotadb import names

READY_TIMEOUT: Final = 120.0
RETRY_SECONDS: Final = 0.1
# initdb with exactly the entrypoint's flags (operator/images/postgres/sotadb-postgres), plus a
# superuser password so the host can log in over TCP; then the server itself as PID 1.
SCRIPT: Final = r"""
set -eu
started=$(date +%s.%N)
initdb -D "$PGDATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 --data-checksums --no-instructions \
    --pwfile=<(printf '%s\n' "$FLOOR_PASSWORD") >/dev/null
unset FLOOR_PASSWORD
echo "host all postgres all scram-sha-256" >> "$PGDATA/pg_hba.conf"
echo "floor: initdb done in $(awk -v a="$started" -v b="$(date +%s.%N)" \
    'BEGIN { printf "%.3f", b - a }')s" >&2
exec postgres -D "$PGDATA" -c listen_addresses='*'
"""
_INITDB_DONE: Final = re.compile(r"floor: initdb done in ([0-9.]+)s")


@dataclass(frozen=True)
class FloorRun:
    seconds: float  # create call → first successful query
    initdb_seconds: float | None


def measure(bench: Bench, index: int) -> FloorRun:
    client = bench.runtime.client
    password = secrets.token_hex(16)
    volume = f"bench-{bench.run_id}-floor{index}"
    started = time.monotonic()
    container = client.containers.run(
        POSTGRES_IMAGE,
        entrypoint=["bash", "-c", SCRIPT],
        environment={"FLOOR_PASSWORD": password},
        volumes={volume: {"bind": names.POSTGRES_DATA_MOUNT, "mode": "rw"}},
        labels=bench.labels(),
        detach=True,
    )
    try:
        seconds = _first_query(container, password, started)
        initdb = timeline.first_number(timeline.read(container), _INITDB_DONE)
        return FloorRun(seconds=seconds, initdb_seconds=initdb)
    finally:
        container.remove(force=True)
        with contextlib.suppress(docker.errors.NotFound):
            client.volumes.get(volume).remove(force=True)


def _first_query(container: Any, password: str, started: float) -> float:
    deadline = started + READY_TIMEOUT
    while time.monotonic() < deadline:
        container.reload()
        if container.status in ("exited", "dead"):
            raise BenchError(f"the floor container exited: {container.logs().decode()[-400:]}")
        address = container.attrs["NetworkSettings"].get("IPAddress")
        if address:
            try:
                with psycopg.connect(
                    host=address,
                    port=names.POSTGRES_PORT,
                    user="postgres",
                    password=password,
                    dbname="postgres",
                    connect_timeout=2,
                ) as connection:
                    connection.execute("SELECT 1").fetchone()
                return time.monotonic() - started
            except psycopg.Error:
                pass
        time.sleep(RETRY_SECONDS)
    raise BenchError(f"the floor server did not answer within {READY_TIMEOUT:.0f}s")
