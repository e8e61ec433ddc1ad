"""The backup runner's Jobs and the CronJob's pod: valid objects, names within limits, the
command the CLI really accepts, the store on the PVC or S3, and their Docker translation."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
import typer

from sotadb import names
from sotadb.cli import backup_commands
from sotadb.credentials import Credentials
from sotadb.docker.translate import Catalog, TranslationError, translate
from sotadb.render import backup as render_backup
from sotadb.render import render_objects
from sotadb.spec import ManagedDatabase, parse_database

KUBERNETES_VERSIONS = ["1.30", "1.33"]
UID = "5f1c9a6e-0d4b-4c8e-9a51-3f2e1b7c6d90"
LONGEST_SLUG = "a" + "b-" * 19 + "z"  # 40 characters, the most a slug may have
LONGEST_BACKUP = "n" * 62 + "9"  # 63: the most a DatabaseBackup name may have
S3 = {
    "bucket": "my-backups",
    "endpoint": "http://minio.storage:9000",
    "region": "eu-central-1",
    "prefix": "prod/shop",
    "credentialsSecret": "backup-s3-keys",
}
CREDENTIALS = Credentials.generate()


def make_db(name: str = "my-app", backups: dict[str, Any] | None = None) -> ManagedDatabase:
    return parse_database(
        {
            "apiVersion": "sota.io/v1",
            "kind": "ManagedDatabase",
            "metadata": {"name": name, "namespace": "shop", "uid": UID},
            "spec": {"backups": backups} if backups is not None else {},
        }
    )


def owner(kind: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": kind,
        "name": name,
        "uid": "0b6f4a7e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def jobs(db: ManagedDatabase, backup: str) -> dict[str, dict[str, Any]]:
    return {
        "backup": render_backup.backup_job(db, backup, owner(names.KIND_BACKUP, backup)),
        "restore": render_backup.restore_job(
            db,
            "source-db",
            make_db("source-db").spec.backups,
            backup,
            backup,
            owner("DatabaseRestore", backup),
        ),
        "forget": render_backup.forget_job(db, backup, owner(names.KIND_BACKUP, backup)),
    }


def cronjob(db: ManagedDatabase) -> dict[str, Any]:
    objects = render_objects(db, CREDENTIALS)
    return next(o for o in objects if o["kind"] == "CronJob")


def container(pod_owner: dict[str, Any]) -> dict[str, Any]:
    spec = pod_owner["spec"]
    template = (
        spec["jobTemplate"]["spec"]["template"] if "jobTemplate" in spec else spec["template"]
    )
    (only,) = template["spec"]["containers"]
    return dict(only)


def env_of(pod_owner: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in container(pod_owner)["env"]}


# ---------------------------------------------------------------- valid, and names that fit


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    ("slug", "backup"),
    [
        pytest.param("my-app", "nightly", id="short"),
        pytest.param(LONGEST_SLUG, LONGEST_BACKUP, id="longest"),
        pytest.param(LONGEST_SLUG, "0" * 63, id="longest-digits"),
    ],
)
@pytest.mark.parametrize("backups", [None, {"s3": S3}], ids=["pvc", "s3"])
def test_every_job_and_the_cronjob_validate(version, slug, backup, backups) -> None:
    db = make_db(slug, backups)
    for job in [*jobs(db, backup).values(), cronjob(db)]:
        kubernetes_validate.validate(job, version, strict=True)


@pytest.mark.parametrize(
    "function", [names.backup_job_name, names.restore_job_name, names.forget_job_name]
)
def test_job_names_are_labels_of_at_most_63_and_stay_distinct(function) -> None:
    short = function("nightly")
    assert short.endswith("-nightly")
    assert short.startswith("sota-")
    long_names = {function(f"{'n' * 58}-{i:04d}") for i in range(50)}
    assert len(long_names) == 50  # the hash keeps them apart
    for name in [*long_names, function(LONGEST_BACKUP), function("n" * 50 + "-" * 12 + "x")]:
        assert len(name) <= names.NAME_MAX_LENGTH
        assert names.SLUG_RE.match(name), name


def test_the_job_names_carry_their_prefixes() -> None:
    assert names.backup_job_name("b") == "sota-dbb-b"
    assert names.restore_job_name("r") == "sota-restore-r"
    assert names.forget_job_name("b") == "sota-forget-b"


@pytest.mark.parametrize("backup", ["my-app-29012345", "a" * 40 + "-29012345", "a" * 63])
def test_an_on_demand_job_is_never_named_like_a_cronjobs_run(backup: str) -> None:
    """The CronJob's runs are `sota-backup-{slug}-{minutes}`, for any slug."""
    assert not names.backup_job_name(backup).startswith("sota-backup-")


# ---------------------------------------------------------------- the Jobs


def test_a_backup_job_runs_once_as_the_runner_owned_by_its_databasebackup() -> None:
    db = make_db()
    job = jobs(db, "nightly")["backup"]
    assert job["metadata"]["name"] == "sota-dbb-nightly"
    assert job["metadata"]["namespace"] == "shop"
    assert job["metadata"]["ownerReferences"] == [owner(names.KIND_BACKUP, "nightly")]
    assert job["metadata"]["labels"] == {
        **names.common_labels("my-app", names.COMPONENT_BACKUP),
        names.LABEL_BACKUP: "nightly",
        names.LABEL_JOB: names.JOB_BACKUP,
    }
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] > 0
    assert spec["ttlSecondsAfterFinished"] > 0
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsUser"] == names.RUNNER_UID
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert spec["template"]["metadata"]["labels"] == job["metadata"]["labels"]
    runner = container(job)
    assert runner["image"] == names.OPERATOR_IMAGE
    assert runner["command"] == [
        "sotadb", "backup", "job", "--database", "my-app", "--name", "nightly",
    ]  # fmt: skip
    assert runner["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert runner["terminationMessagePath"] == names.TERMINATION_LOG
    assert runner["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in runner["volumeMounts"]}
    assert set(mounts) == {names.BACKUP_DIR, names.BACKUP_SCRATCH_DIR, "/tmp"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes[mounts[names.BACKUP_DIR]]["persistentVolumeClaim"]["claimName"]
    assert claim == names.backups_volume_name("my-app")
    assert "emptyDir" in volumes[mounts[names.BACKUP_SCRATCH_DIR]]


def test_the_runner_connects_to_postgres_as_the_app_role_from_its_secret() -> None:
    env = env_of(jobs(make_db(), "nightly")["backup"])
    assert env["PGHOST"]["value"] == names.postgres_name("my-app")  # not PgBouncer
    assert env["PGPORT"]["value"] == str(names.POSTGRES_PORT)
    for key in ("PGUSER", "PGPASSWORD", "PGDATABASE"):
        assert "value" not in env[key]
        assert env[key]["valueFrom"]["secretKeyRef"] == {
            "name": names.app_secret_name("my-app"),
            "key": key,
        }
    assert env[render_backup.ENV_LOCATION]["value"] == names.BACKUP_DIR
    assert env[render_backup.ENV_RETENTION_DAYS]["value"] == "7"
    assert env[render_backup.ENV_SCRATCH_DIR]["value"] == names.BACKUP_SCRATCH_DIR


def test_a_restore_reads_the_sources_backups_and_connects_to_the_target() -> None:
    target = make_db("clone")
    source = make_db("source-db")
    job = render_backup.restore_job(
        target, "source-db", source.spec.backups, "nightly", "bring-back",
        owner("DatabaseRestore", "bring-back"),
    )  # fmt: skip
    assert job["metadata"]["name"] == "sota-restore-bring-back"
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels[names.LABEL_INSTANCE] == "clone"  # admitted by the target's NetworkPolicy
    assert labels[names.LABEL_RESTORE] == "bring-back"
    assert labels[names.LABEL_JOB] == names.JOB_RESTORE
    assert container(job)["command"] == [
        "sotadb", "backup", "restore-job",
        "--database", "clone", "--from", "source-db", "--name", "nightly",
    ]  # fmt: skip
    env = env_of(job)
    assert env["PGHOST"]["value"] == names.postgres_name("clone")
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == names.app_secret_name("clone")
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in job["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == [names.backups_volume_name("source-db")]


def test_a_forget_job_needs_no_database_connection() -> None:
    job = jobs(make_db(), "nightly")["forget"]
    assert job["metadata"]["name"] == "sota-forget-nightly"
    assert job["metadata"]["labels"][names.LABEL_JOB] == names.JOB_FORGET
    assert not {"PGHOST", "PGUSER", "PGPASSWORD"} & set(env_of(job))
    assert container(job)["command"][:3] == ["sotadb", "backup", "forget-job"]


def test_s3_backups_name_the_bucket_and_take_the_keys_from_their_secret() -> None:
    db = make_db(backups={"s3": S3})
    for job in [*jobs(db, "nightly").values(), cronjob(db)]:
        env = env_of(job)
        if job["metadata"]["name"].startswith("sota-restore-"):
            continue  # the restore reads the source's store: the PVC in `jobs`
        assert env[render_backup.ENV_LOCATION]["value"] == "s3://my-backups/prod/shop"
        assert env[render_backup.ENV_S3_ENDPOINT]["value"] == "http://minio.storage:9000"
        assert env[render_backup.ENV_S3_REGION]["value"] == "eu-central-1"
        for key in (render_backup.S3_KEY_ID, render_backup.S3_SECRET_KEY):
            assert "value" not in env[key]
            assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "backup-s3-keys", "key": key}
        template = job["spec"].get("jobTemplate", job)["spec"]["template"]
        assert not any("persistentVolumeClaim" in v for v in template["spec"]["volumes"])
    minimal = make_db(backups={"s3": {"bucket": "b-1", "credentialsSecret": "k"}})
    env = env_of(render_backup.backup_job(minimal, "n", owner(names.KIND_BACKUP, "n")))
    assert env[render_backup.ENV_LOCATION]["value"] == "s3://b-1"
    assert env[render_backup.ENV_S3_REGION]["value"] == "us-east-1"
    assert render_backup.ENV_S3_ENDPOINT not in env


def test_a_restore_from_an_s3_source_reads_that_bucket() -> None:
    source = make_db("source-db", {"s3": S3})
    job = render_backup.restore_job(
        make_db("clone"), "source-db", source.spec.backups, "n", "r", owner("DatabaseRestore", "r")
    )
    assert env_of(job)[render_backup.ENV_LOCATION]["value"] == "s3://my-backups/prod/shop"


# ---------------------------------------------------------------- the CronJob


def test_the_cronjob_runs_the_runner_at_the_spread_minute_one_at_a_time() -> None:
    db = make_db()
    cron = cronjob(db)
    assert cron["metadata"]["name"] == names.backup_cronjob_name("my-app")
    spec = cron["spec"]
    assert spec["schedule"] == db.backup_schedule
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["jobTemplate"]["spec"]["backoffLimit"] == 0
    assert spec["jobTemplate"]["metadata"]["labels"][names.LABEL_JOB] == names.JOB_BACKUP
    runner = container(cron)
    assert runner["image"] == names.OPERATOR_IMAGE
    assert runner["command"] == ["sotadb", "backup", "job", "--database", "my-app"]
    assert env_of(cron)[render_backup.ENV_BACKUP_NAME]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}
    }


def test_two_databases_do_not_share_a_minute_by_construction() -> None:
    minutes = {make_db(f"db-{i}").backup_minute_of_day for i in range(200)}
    assert len(minutes) > 150  # spread over 360 minutes, not one second


# ---------------------------------------------------------------- the CLI accepts the commands


def _parse(command: list[str]) -> dict[str, Any]:
    assert command[:2] == ["sotadb", "backup"]
    group = typer.main.get_command(backup_commands.app)
    sub = group.get_command(group.make_context("backup", [command[2]]), command[2])  # type: ignore[attr-defined]
    assert sub is not None, command[2]
    with sub.make_context(command[2], command[3:]) as context:
        return dict(context.params)


def test_the_rendered_commands_are_ones_the_cli_accepts() -> None:
    db = make_db(LONGEST_SLUG)
    for job in jobs(db, LONGEST_BACKUP).values():
        params = _parse(container(job)["command"])
        assert params["database"] == LONGEST_SLUG
        assert params["name"] == LONGEST_BACKUP


@pytest.mark.parametrize("bad", ["Nightly", "-x", "x-", "a" * 64, "a.b", ""])
def test_the_cli_refuses_a_backup_name_that_is_not_a_label(bad: str) -> None:
    with pytest.raises(Exception, match="DNS-1123") as raised:
        _parse(["sotadb", "backup", "forget-job", "--database", "my-app", "--name", bad])
    assert type(raised.value).__name__ == "BadParameter"  # a usage error: exit status 2


# ---------------------------------------------------------------- on Docker


def test_a_job_pod_translates_to_a_one_shot_container_with_its_report_file() -> None:
    db = make_db()
    catalog = Catalog.of(render_objects(db, CREDENTIALS))
    template = copy.deepcopy(cronjob(db)["spec"]["jobTemplate"]["spec"]["template"])
    arguments: dict[str, Any] = {
        "container_name": "sota-job-my-app",
        "pod_template": template,
        "catalog": catalog,
        "network": "sota-net-my-app",
        "files_root": "/state/files",
        "volume_claims": {"backups": "backups-volume"},
        "labels": {},
    }
    with pytest.raises(TranslationError, match="field_values"):
        translate(**arguments)
    field = "metadata.labels['batch.kubernetes.io/job-name']"
    plan = translate(
        **arguments, field_values={field: "sota-backup-my-app-1"}, termination_log="/h/t.log"
    )
    args = plan.create_args
    assert args["restart_policy"] == {"Name": "no"}
    assert args["environment"][render_backup.ENV_BACKUP_NAME] == "sota-backup-my-app-1"
    assert args["environment"]["PGPASSWORD"] == CREDENTIALS.password
    assert args["user"] == f"{names.RUNNER_UID}:{names.RUNNER_UID}"
    mounts = {m["Target"]: m for m in args["mounts"]}
    assert mounts[names.TERMINATION_LOG]["Source"] == "/h/t.log"
    assert mounts[names.TERMINATION_LOG]["ReadOnly"] is False
    assert mounts[names.BACKUP_DIR]["Source"] == "backups-volume"
    assert names.BACKUP_SCRATCH_DIR in args["tmpfs"]
