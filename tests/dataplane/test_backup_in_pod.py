"""The Kubernetes backup Jobs, run for real: the rendered Job pod templates, translated by the
Docker runtime's own `translate`, in the operator image, on the database's network.

What a cluster would do and this host can: the pod's container (image, command, env from the
app Secret, restricted user, read-only root), the backups PVC as a named volume, the scratch
emptyDir as a tmpfs, and the termination message file bind-mounted as the kubelet does. So
these tests prove the runner's commands, its connection as the app role, the drill's
throw-away server inside the pod, the in-place restore in one transaction, and the report the
operator reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import docker
import docker.errors
import psycopg
import pytest
from backup_fixtures import direct_sql, fill, observe
from dataplane_helpers import (
    CONNECT_TIMEOUT,
    SESSION_TAG,
    TEST_LABEL,
    Database,
    provisioned,
    redact,
    slug_for,
)

from sotadb import names
from sotadb.backup.catalog import Phase, Verification
from sotadb.backup.report import JobReport, parse_report
from sotadb.backup.store import BackupStore
from sotadb.docker.runtime import DockerRuntime
from sotadb.docker.translate import Catalog, translate
from sotadb.render import render_objects
from sotadb.render.backup import backup_job, cronjob_pod_template, forget_job, restore_job

pytestmark = pytest.mark.dataplane

REPOSITORY: Final = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT: Final = 600
JOB_TIMEOUT: Final = 120
JOB_NAME_FIELD: Final = f"metadata.labels['{names.LABEL_JOB_NAME}']"


@dataclass(frozen=True)
class Finished:
    status: int
    report: JobReport | None
    logs: str  # redacted


@dataclass(frozen=True)
class Pods:
    """Runs rendered Job pods for one database, with `volume` as its backups PVC."""

    db: Database
    volume: str
    work: Path

    @property
    def store(self) -> BackupStore:
        mountpoint = self.db.client.volumes.get(self.volume).attrs["Mountpoint"]
        return BackupStore(Path(mountpoint))

    def run(self, template: dict[str, Any], **field_values: str) -> Finished:
        client = self.db.client
        log = self.work / f"termination-{secrets.token_hex(4)}.log"
        log.write_text("")
        log.chmod(0o666)  # the runner's uid writes it, as the kubelet's file
        plan = translate(
            container_name=f"sota-job-{self.db.slug}-{secrets.token_hex(3)}",
            pod_template=template,
            catalog=Catalog.of(render_objects(self.db.result.db, self.db.credentials)),
            network=self.db.network,
            files_root=str(self.work),
            volume_claims={"backups": self.volume},
            labels={TEST_LABEL: SESSION_TAG},
            field_values=field_values,
            termination_log=str(log),
        )
        container = client.containers.create(**plan.create_args)
        try:
            container.start()
            status = int(container.wait(timeout=JOB_TIMEOUT)["StatusCode"])
            logs = redact(container.logs(stdout=True, stderr=True).decode(errors="replace"))
        finally:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        return Finished(status, parse_report(log.read_text() or None), logs)

    def job(self, job: dict[str, Any]) -> Finished:
        return self.run(job["spec"]["template"])


def owner(kind: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": kind,
        "name": name,
        "uid": "0b6f4a7e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
        "controller": True,
        "blockOwnerDeletion": True,
    }


@pytest.fixture(scope="module")
def operator_image(docker_client: docker.DockerClient) -> str:
    """The runner's image, built (or found up to date) from this tree."""
    result = subprocess.run(
        ["bash", str(REPOSITORY / "scripts" / "build-images.sh"), "operator"],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"building {names.OPERATOR_IMAGE} failed:\n{result.stderr[-3000:]}")
    return names.OPERATOR_IMAGE


@pytest.fixture(scope="module")
def pods(
    runtime: DockerRuntime, operator_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pods]:
    slug = slug_for("bk-pod")
    volume = f"sota-test-backups-{slug}"
    with provisioned(runtime, slug) as db:
        runtime.client.volumes.create(volume, labels={TEST_LABEL: SESSION_TAG})
        try:
            fill(db)
            yield Pods(db, volume, tmp_path_factory.mktemp(f"{slug}-pods"))
        finally:
            with contextlib.suppress(docker.errors.NotFound):
                runtime.client.volumes.get(volume).remove(force=True)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_backup_restore_refusals_and_forget_through_the_rendered_jobs(pods: Pods) -> None:
    db = pods.db
    spec = db.result.db
    before = observe(db)
    assert '"app-data"."every-type"' in before
    assert "public.pgbench_accounts" in before

    # ------------------------------------------------ backup: dump, drill, report
    taken = pods.job(backup_job(spec, "nightly-1", owner(names.KIND_BACKUP, "nightly-1")))
    assert taken.status == 0, taken.logs
    report = taken.report
    assert report is not None, taken.logs
    assert (report.kind, report.name, report.phase) == ("backup", "nightly-1", "Succeeded")
    assert report.verification == "Passed", report.message
    assert report.tables == len(before)
    assert report.rows == sum(t.rows for t in before.values())
    record = pods.store.load(db.slug, "nightly-1")
    assert record.phase is Phase.SUCCEEDED
    assert record.verification is Verification.PASSED
    assert record.tables == before  # taken as the app role, in the dump's snapshot
    dump = pods.store.root / db.slug / "nightly-1.sql.gz"
    assert record.file == dump.name
    assert (report.size, report.sha256) == (dump.stat().st_size, sha256_of(dump))
    assert (record.size, record.sha256) == (report.size, report.sha256)
    assert report.location == f"{names.BACKUP_DIR}/{db.slug}/nightly-1.sql.gz"

    # ------------------------------------------------ restore in place: the data comes back
    direct_sql(
        db,
        "DELETE FROM pgbench_accounts WHERE aid <= 1000;"
        ' DROP SCHEMA "app-data" CASCADE; CREATE TABLE stray (x int);',
    )
    assert observe(db) != before
    restore = restore_job(
        spec, db.slug, spec.spec.backups, "nightly-1", "put-back", owner("DatabaseRestore", "r")
    )
    restored = pods.job(restore)
    assert restored.status == 0, restored.logs
    assert restored.report is not None, restored.logs
    assert restored.report.phase == "Succeeded", restored.report.message
    assert observe(db) == before  # "stray" is gone too: the database is the backup
    with psycopg.connect(db.url(), connect_timeout=CONNECT_TIMEOUT) as connection:
        owners = connection.execute(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname IN ('public', 'app-data')"
        ).fetchall()
        accounts = connection.execute("SELECT count(*) FROM pgbench_accounts").fetchone()
    assert owners == [(db.role,)]
    assert accounts == (before["public.pgbench_accounts"].rows,)

    # ------------------------------------------------ a damaged file is refused, data untouched
    direct_sql(db, "CREATE TABLE marker (x int); INSERT INTO marker VALUES (1);")
    marked = observe(db)
    original = dump.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    dump.write_bytes(bytes(damaged))
    refused = pods.job(restore)
    dump.write_bytes(original)
    assert refused.status == 1, refused.logs
    assert refused.report is not None
    assert refused.report.phase == "Failed"
    assert "sha256" in (refused.report.message or ""), refused.report.message
    assert observe(db) == marked

    # ------------------------------------------------ a mismatch after replay rolls back
    record_path = pods.store.root / db.slug / "nightly-1.json"
    raw = json.loads(record_path.read_text())
    raw["tables"]["public.pgbench_branches"]["rows"] += 1
    record_path.write_text(json.dumps(raw))
    rolled_back = pods.job(restore)
    assert rolled_back.status == 1, rolled_back.logs
    message = (rolled_back.report.message if rolled_back.report else None) or ""
    assert "rolled back" in message, message
    assert "public.pgbench_branches: 1 rows restored, 2 recorded" in message, message
    assert observe(db) == marked  # "marker" is still there: nothing was replaced

    # ------------------------------------------------ the same count, other rows: rolls back too
    raw["tables"]["public.pgbench_branches"]["rows"] -= 1
    raw["tables"]["public.pgbench_branches"]["checksum"] = "sha256:" + "0" * 64
    record_path.write_text(json.dumps(raw))
    rolled_back = pods.job(restore)
    assert rolled_back.status == 1, rolled_back.logs
    message = (rolled_back.report.message if rolled_back.report else None) or ""
    assert "public.pgbench_branches: checksum differs (1 rows each)" in message, message
    assert observe(db) == marked

    # ------------------------------------------------ forget: file and record go; twice is fine
    forgotten = pods.job(forget_job(spec, "nightly-1", owner(names.KIND_BACKUP, "nightly-1")))
    assert forgotten.status == 0, forgotten.logs
    assert forgotten.report is not None
    assert forgotten.report.phase == "Succeeded"
    assert not dump.exists()
    assert not record_path.exists()
    again = pods.job(forget_job(spec, "nightly-1", owner(names.KIND_BACKUP, "nightly-1")))
    assert again.status == 0
    assert again.report is not None
    assert again.report.phase == "Succeeded"


def test_the_cronjob_pod_names_its_backup_after_its_job(pods: Pods) -> None:
    job_name = f"{names.backup_cronjob_name(pods.db.slug)}-29400000"
    template = cronjob_pod_template(pods.db.result.db, image=names.OPERATOR_IMAGE)
    taken = pods.run(template, **{JOB_NAME_FIELD: job_name})
    assert taken.status == 0, taken.logs
    assert taken.report is not None
    assert taken.report.name == job_name
    assert taken.report.verification == "Passed", taken.report.message
    record = pods.store.load(pods.db.slug, job_name)
    assert record.sha256 == taken.report.sha256
