"""The bench's own sandbox: a temporary SOTADB_HOME, unique slugs, databases that always go."""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench.report import progress
from bench.settings import Settings
from sotadb import names
from sotadb.docker.runtime import DockerRuntime, UpResult, minimal_document
from sotadb.docker.state import StateStore

# Containers and volumes the bench itself creates (pgbench clients, the floor) carry this label,
# so a leftover of an interrupted run can be found: docker ps -a --filter label=sotadb.bench
BENCH_LABEL: Final = "sotadb.bench"
POSTGRES_IMAGE: Final = names.POSTGRES_IMAGE


class BenchError(Exception):
    """The bench could not measure something (as opposed to a target being missed)."""


@dataclass(frozen=True)
class Bench:
    home: Path  # the temporary SOTADB_HOME every runtime and CLI call of this run uses
    runtime: DockerRuntime
    settings: Settings
    run_id: str

    @classmethod
    def create(cls, home: Path, settings: Settings) -> Bench:
        runtime = DockerRuntime(store=StateStore(home))
        return cls(home=home, runtime=runtime, settings=settings, run_id=secrets.token_hex(3))

    def slug(self, purpose: str) -> str:
        slug = f"bench-{self.run_id}-{purpose}"
        if len(slug) > names.SLUG_MAX_LENGTH or not names.SLUG_RE.fullmatch(slug):
            raise BenchError(f"bench slug {slug!r} is not a valid database name")
        return slug

    def labels(self) -> dict[str, str]:
        return {BENCH_LABEL: self.run_id}

    @contextmanager
    def database(self, slug: str, spec: Mapping[str, Any] | None = None) -> Iterator[UpResult]:
        """A database for the duration of the block; purged afterwards, whatever happened."""
        document = minimal_document(slug)
        if spec:
            document["spec"] = dict(spec)
        try:
            progress(f"provisioning {slug}")
            yield self.runtime.up(document)
        finally:
            progress(f"removing {slug} (down --purge)")
            self.runtime.down(slug, purge=True)
