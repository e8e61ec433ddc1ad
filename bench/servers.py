"""A provisioned bench database as pgbench sees it: its network, its URLs' parts, its settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg

from bench.harness import BenchError
from bench.pgbench import Connection
from sotadb import names
from sotadb.docker import engine
from sotadb.docker.runtime import DockerRuntime, UpResult

SHOWN_SETTINGS = ("max_connections", "shared_buffers", "synchronous_commit", "server_version")


@dataclass(frozen=True)
class Server:
    label: str  # "A", "B": how the tables name it
    slug: str
    password: str = field(repr=False)

    @classmethod
    def of(cls, label: str, up: UpResult) -> Server:
        return cls(label, up.db.slug, up.credentials.password)

    @property
    def network(self) -> str:
        return names.network_name(self.slug)

    def pooled(self) -> Connection:
        """DATABASE_URL's endpoint: PgBouncer's name on the database's network."""
        return self._connection(names.pooler_name(self.slug), names.POOLER_PORT)

    def direct(self) -> Connection:
        """DIRECT_DATABASE_URL's endpoint: PostgreSQL itself."""
        return self._connection(names.postgres_name(self.slug), names.POSTGRES_PORT)

    def _connection(self, host: str, port: int) -> Connection:
        return Connection(
            host=host,
            port=port,
            user=names.role_name(self.slug),
            database=names.database_name(self.slug),
            password=self.password,
        )

    def settings(
        self, runtime: DockerRuntime, keys: Sequence[str] = SHOWN_SETTINGS
    ) -> dict[str, str]:
        """The server's effective settings, read over its bridge address (direct)."""
        container = engine.find_container(runtime.client, names.postgres_name(self.slug))
        address = None if container is None else engine.container_ip(container, self.network)
        if address is None:
            raise BenchError(f"{names.postgres_name(self.slug)} has no address")
        with psycopg.connect(
            host=address,
            port=names.POSTGRES_PORT,
            user=names.role_name(self.slug),
            password=self.password,
            dbname=names.database_name(self.slug),
            connect_timeout=5,
        ) as connection:
            values = {}
            for key in keys:
                row = connection.execute("SELECT current_setting(%s)", (key,)).fetchone()
                values[key] = "" if row is None else str(row[0])
            return values
