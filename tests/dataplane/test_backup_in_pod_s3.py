"""The Kubernetes backup Jobs against S3, run for real: a database whose `spec.backups.s3` is
set, its rendered backup, restore and forget Job pods translated by the Docker runtime's own
`translate` and run in the operator image on the database's network.

The S3 side is moto's server, checking keys and signatures (`keys_checked`) for an IAM user
allowed every S3 action; it listens on the gateway address of the network `sota-net-{slug}`,
which this module creates before `up` (the runtime adopts it), so the Job's traffic never
leaves that network and the host. The keys reach the pod as a cluster would give them: the
Secret named by `credentialsSecret`, resolved by `translate` into the env `render/backup.py`
asks for. Wrong keys must fail the Job with a report naming credentialsSecret, and no key may
appear in a container's log, a report or pytest's output.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
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
    document_for,
    provisioned,
    redact,
    slug_for,
)
from s3server import REGION, S3Server, keys_checked, s3_server, with_s3_user
from test_backup_in_pod import JOB_NAME_FIELD, JOB_TIMEOUT, operator_image, owner

from sotadb import names
from sotadb.backup.catalog import BackupRecord, Phase, Verification
from sotadb.backup.object_store import PART_SIZE
from sotadb.backup.report import JobReport, parse_report
from sotadb.docker.runtime import DockerRuntime
from sotadb.docker.translate import Catalog, default_labels, translate
from sotadb.render import render_objects
from sotadb.render.backup import (
    S3_KEY_ID,
    S3_SECRET_KEY,
    backup_job,
    cronjob_pod_template,
    forget_job,
    restore_job,
)
from sotadb.render.meta import Manifest

pytestmark = pytest.mark.dataplane

__all__ = ["operator_image"]  # a fixture, shared with test_backup_in_pod

PREFIX: Final = "team/backups"
CREDENTIALS_SECRET: Final = "shop-s3-keys"
HIDDEN: Final = "<s3-key>"
# Incompressible rows, so that the dump is a multipart upload of several parts.
NOISE_SQL: Final = (
    "CREATE TABLE noise AS SELECT g, md5(random()::text) || md5(random()::text) AS x "
    "FROM generate_series(1, 300000) g;"
)


@dataclass(frozen=True)
class Ran:
    """A finished Job pod. `logs` and `termination` are raw: the key checks read them."""

    status: int
    report: JobReport | None
    termination: str = field(repr=False)
    logs: str = field(repr=False)


@dataclass(frozen=True)
class S3Pods:
    """Runs rendered Job pods of one database whose backups live in `bucket` under PREFIX."""

    db: Database
    s3: S3Server  # its keys: the IAM user's, the only ones the server accepts
    bucket: str
    work: Path
    seen: list[str] = field(default_factory=list, repr=False)  # every log and report

    def secret(self, keys: Mapping[str, str]) -> Manifest:
        """The credentialsSecret as the cluster would hold it."""
        data = {key: base64.b64encode(value.encode()).decode() for key, value in keys.items()}
        metadata = {"name": CREDENTIALS_SECRET, "namespace": self.db.result.db.namespace}
        return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "data": data}

    def run(
        self,
        template: dict[str, Any],
        keys: Mapping[str, str] | None = None,
        field_values: Mapping[str, str] | None = None,
    ) -> Ran:
        """Run a Job's pod with the credentialsSecret holding `keys` (default: the good ones)."""
        db = self.db
        log = self.work / f"termination-{secrets.token_hex(4)}.log"
        log.write_text("")
        log.chmod(0o666)  # the runner's uid writes it, as the kubelet's file
        catalog = Catalog.of(
            [*render_objects(db.result.db, db.credentials), self.secret(keys or self.s3.secrets)]
        )
        plan = translate(
            container_name=f"sota-job-{db.slug}-{secrets.token_hex(3)}",
            pod_template=template,
            catalog=catalog,
            network=db.network,
            files_root=str(self.work),
            volume_claims={},
            labels={TEST_LABEL: SESSION_TAG},
            field_values=field_values,
            termination_log=str(log),
        )
        assert not plan.volumes, "an S3 Job mounts no backups volume"
        container = db.client.containers.create(**plan.create_args)
        try:
            container.start()
            status = int(container.wait(timeout=JOB_TIMEOUT)["StatusCode"])
            logs = container.logs(stdout=True, stderr=True).decode(errors="replace")
        finally:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        termination = log.read_text()
        self.seen.extend([logs, termination])
        return Ran(status, parse_report(termination or None), termination, logs)

    def job(self, job: dict[str, Any], keys: Mapping[str, str] | None = None) -> Ran:
        return self.run(job["spec"]["template"], keys)

    def shown(self, text: str) -> str:
        """`text` fit for an assertion message: no password, no S3 key."""
        for value in self.s3.secrets.values():
            text = text.replace(value, HIDDEN)
        return redact(text)

    def object_keys(self) -> list[str]:
        listed = self.s3.client().list_objects_v2(
            Bucket=self.bucket, Prefix=f"{PREFIX}/{self.db.slug}/"
        )
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def uploads(self) -> list[str]:
        """Incomplete multipart uploads under the database's prefix."""
        listed = self.s3.client().list_multipart_uploads(
            Bucket=self.bucket, Prefix=f"{PREFIX}/{self.db.slug}/"
        )
        return sorted(upload["Key"] for upload in listed.get("Uploads", []))

    def etag(self, key: str) -> str:
        return self.s3.client().head_object(Bucket=self.bucket, Key=key)["ETag"].strip('"')

    def get(self, key: str) -> bytes:
        return self.s3.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()


@contextlib.contextmanager
def own_network(client: docker.DockerClient, slug: str) -> Iterator[str]:
    """`sota-net-{slug}` made by the test (the runtime's `up` adopts it, `down` removes it);
    yields its gateway, this host's address on it."""
    labels = {**default_labels(slug), TEST_LABEL: SESSION_TAG}
    network = client.networks.create(
        names.network_name(slug), driver="bridge", labels=labels, check_duplicate=True
    )
    try:
        network.reload()
        yield str(network.attrs["IPAM"]["Config"][0]["Gateway"])
    finally:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            network.remove()


@pytest.fixture(scope="module")
def pods(
    runtime: DockerRuntime,
    docker_client: docker.DockerClient,
    operator_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[S3Pods]:
    slug = slug_for("bk-pod-s3")
    with contextlib.ExitStack() as stack:
        gateway = stack.enter_context(own_network(docker_client, slug))
        server = with_s3_user(stack.enter_context(s3_server(gateway)))
        stack.enter_context(keys_checked())
        bucket = server.create_bucket("sotadb-pod")
        s3 = {
            "bucket": bucket,
            "endpoint": server.endpoint,
            "region": REGION,
            "prefix": PREFIX,
            "credentialsSecret": CREDENTIALS_SECRET,
        }
        db = stack.enter_context(
            provisioned(runtime, slug, document_for(slug, {"backups": {"s3": s3}}))
        )
        assert db.result.db.spec.backups.s3 is not None
        fill(db)
        direct_sql(db, NOISE_SQL, timeout=120)
        yield S3Pods(db, server, bucket, tmp_path_factory.mktemp(f"{slug}-pods"))


def test_backup_restore_and_forget_through_the_rendered_jobs_in_s3(pods: S3Pods) -> None:
    db = pods.db
    spec = db.result.db
    before = observe(db)
    dump_key = f"{PREFIX}/{db.slug}/nightly-1.sql.gz"
    record_key = f"{PREFIX}/{db.slug}/nightly-1.json"

    # ------------------------------------------------ backup: dump into the bucket, drill, report
    taken = pods.job(backup_job(spec, "nightly-1", owner(names.KIND_BACKUP, "nightly-1")))
    assert taken.status == 0, pods.shown(taken.logs)
    report = taken.report
    assert report is not None, pods.shown(taken.logs)
    assert (report.kind, report.name, report.phase) == ("backup", "nightly-1", "Succeeded")
    assert report.verification == "Passed", pods.shown(report.message or "")
    assert report.location == f"s3://{pods.bucket}/{dump_key}"
    assert pods.object_keys() == [record_key, dump_key]  # the lease is gone
    assert pods.uploads() == []  # the multipart upload was completed
    dump = pods.get(dump_key)
    assert len(dump) > PART_SIZE
    etag = pods.etag(dump_key)
    assert int(etag.rpartition("-")[2]) >= 2, etag  # a multipart object's ETag ends in -{parts}
    assert (report.size, report.sha256) == (len(dump), hashlib.sha256(dump).hexdigest())
    record = BackupRecord.from_json(json.loads(pods.get(record_key)))
    assert (record.phase, record.verification) == (Phase.SUCCEEDED, Verification.PASSED)
    assert (record.size, record.sha256, record.location) == (
        report.size,
        report.sha256,
        report.location,
    )
    assert record.tables == before  # taken as the app role, in the dump's snapshot
    assert (report.tables, report.rows) == (len(before), sum(t.rows for t in before.values()))

    # ------------------------------------------------ a re-run Job reports it again, no new dump
    again = pods.job(backup_job(spec, "nightly-1", owner(names.KIND_BACKUP, "nightly-1")))
    assert again.status == 0, pods.shown(again.logs)
    assert again.report is not None, pods.shown(again.logs)
    assert (again.report.phase, again.report.sha256) == ("Succeeded", report.sha256)
    assert pods.object_keys() == [record_key, dump_key]
    assert pods.etag(dump_key) == etag

    # ------------------------------------------------ restore in place from the bucket
    direct_sql(
        db,
        "DELETE FROM pgbench_accounts WHERE aid <= 1000;"
        ' DROP SCHEMA "app-data" CASCADE; CREATE TABLE stray (x int);',
    )
    assert observe(db) != before
    restore = restore_job(
        spec, db.slug, spec.spec.backups, "nightly-1", "put-back", owner(names.KIND_RESTORE, "r")
    )
    restored = pods.job(restore)
    assert restored.status == 0, pods.shown(restored.logs)
    assert restored.report is not None, pods.shown(restored.logs)
    assert restored.report.phase == "Succeeded", pods.shown(restored.report.message or "")
    assert restored.report.sha256 == report.sha256
    assert observe(db) == before  # "stray" is gone too: the database is the backup
    with psycopg.connect(db.url(), connect_timeout=CONNECT_TIMEOUT) as connection:  # pooled
        accounts = connection.execute("SELECT count(*) FROM pgbench_accounts").fetchone()
    assert accounts == (before["public.pgbench_accounts"].rows,)

    # ------------------------------------------------ forget: both objects go; twice is fine
    forget = forget_job(spec, "nightly-1", owner(names.KIND_BACKUP, "nightly-1"))
    for _ in range(2):
        forgotten = pods.job(forget)
        assert forgotten.status == 0, pods.shown(forgotten.logs)
        assert forgotten.report is not None, pods.shown(forgotten.logs)
        assert forgotten.report.phase == "Succeeded", pods.shown(forgotten.report.message or "")
        assert pods.object_keys() == []


def test_the_cronjob_pod_backs_up_into_s3_under_its_job_name(pods: S3Pods) -> None:
    db = pods.db
    job_name = f"{names.backup_cronjob_name(db.slug)}-29400000"
    template = cronjob_pod_template(db.result.db, image=names.OPERATOR_IMAGE)
    taken = pods.run(template, field_values={JOB_NAME_FIELD: job_name})
    assert taken.status == 0, pods.shown(taken.logs)
    assert taken.report is not None, pods.shown(taken.logs)
    assert taken.report.name == job_name
    assert taken.report.verification == "Passed", pods.shown(taken.report.message or "")
    dump_key = f"{PREFIX}/{db.slug}/{job_name}.sql.gz"
    assert pods.object_keys() == [f"{PREFIX}/{db.slug}/{job_name}.json", dump_key]
    assert taken.report.sha256 == hashlib.sha256(pods.get(dump_key)).hexdigest()


@pytest.mark.parametrize(
    ("wrong", "refusal"),
    [("key id", "InvalidAccessKeyId"), ("secret key", "SignatureDoesNotMatch")],
)
def test_wrong_keys_fail_the_job_naming_the_secret_and_no_key_is_shown(
    wrong: str, refusal: str, pods: S3Pods, capfd: pytest.CaptureFixture[str]
) -> None:
    bad = dict(pods.s3.secrets)
    bad[S3_KEY_ID if wrong == "key id" else S3_SECRET_KEY] = (
        "AKIA" + secrets.token_hex(8).upper() if wrong == "key id" else secrets.token_urlsafe(30)
    )
    job = backup_job(pods.db.result.db, "refused-1", owner(names.KIND_BACKUP, "refused-1"))
    refused = pods.job(job, bad)
    assert refused.status == 1, pods.shown(refused.logs)
    assert refused.report is not None, pods.shown(refused.logs)
    assert (refused.report.kind, refused.report.phase) == ("backup", "Failed")
    message = refused.report.message or ""
    assert "spec.backups.s3.credentialsSecret" in message, pods.shown(message)
    assert refusal in message, pods.shown(message)
    written = [key for key in pods.object_keys() if "/refused-1." in key or key.endswith("/.lock")]
    assert written == []  # nothing written, not even the lease
    assert pods.uploads() == []

    captured = capfd.readouterr()
    everything = "\n".join([*pods.seen, captured.out, captured.err])
    assert len(pods.seen) >= 2
    for name, value in [*pods.s3.secrets.items(), *((f"wrong {k}", v) for k, v in bad.items())]:
        assert value not in everything, f"{name} appeared in a log, a report or pytest's output"
