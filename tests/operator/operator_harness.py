"""The real operator (kopf + ``sotadb.kube.handlers``) against the emulated API, for tests.

``Operator`` runs the handlers in a ``kopf.testing.KopfRunner`` (its own thread and loop), so
the test's thread may block (kubectl, the ``kubernetes`` client) and can stop and restart the
operator at will. Its fixtures are in ``conftest_operator.py``, which the ``test_operator_*``
modules load with ``pytest_plugins = ["conftest_operator"]``.

Requests are told apart by user agent: kopf's own (``kopf/…``) and the operator's client
(``sotadb-operator/<version>``, also on its list-and-watch of owned objects) are the
operator's; the tests' client says ``sotadb-operator-tests`` and kubectl ``kubectl/…``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import http.client
import json
import pathlib
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import kopf
import kopf.testing
from kubeemu import ApiCall, KubeEmulator, Write

from sotadb import names
from sotadb.credentials import Credentials
from sotadb.kube.api import USER_AGENT
from sotadb.kube.backup_handlers import register_backups
from sotadb.kube.handlers import OperatorConfig, register
from sotadb.kube.observe import Observed, observe
from sotadb.kube.reconcile import keep_immutable_claims
from sotadb.render import render_objects
from sotadb.render.meta import spec_hash
from sotadb.render.pods import AUTH_VERIFIER_KEY
from sotadb.spec import parse_database

T = TypeVar("T")
REPO = pathlib.Path(__file__).resolve().parents[2]
CRDS = (
    REPO / "crds" / "manageddatabases.sota.io.yaml",
    REPO / "crds" / "databasebackups.sota.io.yaml",
    REPO / "crds" / "databaserestores.sota.io.yaml",
)
MINIMAL = REPO / "manifests" / "examples" / "minimal.yaml"
NAMESPACE = "default"
MDB = "manageddatabases.sota.io"
OPERATOR_AGENTS = ("kopf/", USER_AGENT)
TEST_AGENT = "sotadb-operator-tests"
# Every kind a ManagedDatabase owns, as the emulator (and kubectl) names its resource.
OWNED_RESOURCES: Mapping[str, str] = {
    "Secret": "secrets",
    "ConfigMap": "configmaps",
    "Service": "services",
    "NetworkPolicy": "networkpolicies.networking.k8s.io",
    "StatefulSet": "statefulsets.apps",
    "Deployment": "deployments.apps",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "CronJob": "cronjobs.batch",
}
# What a started operator's own list-and-watch follows (each is listed first, then watched):
# every owned kind and the ManagedDatabases. kopf's kinds come from its registry.
WATCHED = {"manageddatabases", *(r.split(".")[0] for r in OWNED_RESOURCES.values())}
# Owned objects the operator itself renders (the data PVC comes from the StatefulSet).
RENDERED_COUNT = 12
# Short retries keep tests quick; the behaviour (retry until it works) is the same.
TEST_RETRY_DELAY = 0.3
# How long a killed operator's handler thread is held before its calls return (kopf has
# cancelled the handler's task well within it: the stop flag is seen at once).
KILL_GRACE = 0.2


# ---------------------------------------------------------------- the operator


class Operator:
    """The operator's real handlers under kopf, started and stopped by the test.

    Each start uses a fresh registry and a fresh kopf (nothing survives a restart but what is
    stored in the API), as a new operator pod would.
    """

    def __init__(
        self,
        emu: KubeEmulator,
        kubeconfig: pathlib.Path,
        *,
        resync_seconds: float = 300.0,
        namespaces: tuple[str, ...] = (),
    ) -> None:
        self.emu = emu
        self.kubeconfig = kubeconfig
        self.resync_seconds = resync_seconds
        self.namespaces = namespaces
        self.runner: kopf.testing.KopfRunner | None = None
        self._dead = threading.Event()
        self._killed_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.verbose = False  # kopf's debug log in runner.output
        # Errors the operator's client raises instead of sending its next requests.
        self.faults: list[BaseException] = []
        self.starts = 0

    def start(self, *, wait: bool = True) -> Operator:
        """Start a new kopf; with ``wait``, return once it watches everything it handles (so
        that the request log after this point holds only its reactions)."""
        if self.runner is not None:
            raise RuntimeError("the operator is already running")
        registry = kopf.OperatorRegistry()
        register(
            registry,
            OperatorConfig(
                kubeconfig=str(self.kubeconfig),
                resync_seconds=self.resync_seconds,
                namespaces=self.namespaces,
            ),
        )
        register_backups(registry)

        dead = self._dead = threading.Event()

        @kopf.on.startup(registry=registry)
        async def for_tests(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
            self._loop = asyncio.get_running_loop()
            # Runs after the operator's own `configure` (activities run in registration order).
            # Watches that the server ends every minute, and a stop that does not wait for the
            # handlers in flight to finish their work.
            settings.watching.server_timeout = 60
            settings.watching.client_timeout = 70
            settings.watching.connect_timeout = 5
            settings.networking.request_timeout = 30
            settings.queueing.exit_timeout = 0.01
            # The kill switch. A sync handler runs in a thread that kopf cannot end (a stopping
            # kopf waits for it): without the switch the thread would go on writing, as no
            # killed process does. Once killed, the operator's client sends nothing more. Its
            # calls wait until kopf has cancelled the handler's task (it does so at once), then
            # pretend to succeed: kopf drops a cancelled handler's outcome and records nothing.
            # (Failing them instead would let kopf record a failure and retry it while it stops.)
            api = memo["api"]
            send = api._request

            def request(*args: Any, **kwargs: Any) -> Any:
                if self.faults:  # a broken connection, say: raised before anything is sent
                    raise self.faults.pop(0)
                if dead.is_set():
                    time.sleep(max(0.0, self._killed_at + KILL_GRACE - time.monotonic()))
                    return {}
                return send(*args, **kwargs)

            api._request = request

        scope = [arg for ns in self.namespaces for arg in ("-n", ns)] or ["--all-namespaces"]
        verbose = ["--verbose"] if self.verbose else []
        runner = kopf.testing.KopfRunner(
            ["run", "--standalone", *verbose, *scope], registry=registry, timeout=30
        )
        mark = self.emu.mark()
        runner.__enter__()
        self.runner = runner
        self.starts += 1
        if wait:
            # The operator's own watches start in a startup handler, before kopf lists
            # anything; kopf then lists and watches each of its kinds in no fixed order.
            by_kopf = kopf_watched(registry)
            wait_for(
                lambda: self.watching(mark) >= WATCHED and self.watching(mark, "kopf/") >= by_kopf,
                what="the operator's watches",
            )
        return self

    def watching(self, since: int, agent: str = "") -> set[str]:
        return {
            c.plural or ""
            for c in self.emu.calls(since)
            if c.verb == "watch" and is_operator(c) and c.user_agent.startswith(agent)
        }

    def kill(self) -> None:
        """Stop at once, as a killed process would: whatever the handlers in flight would send
        next is never sent (a request already sent completes)."""
        self._killed_at = time.monotonic()
        self._dead.set()
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # already closed
                loop.call_soon_threadsafe(_reap_timers, loop)
        self.stop()

    def stop(self) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:
            runner.__exit__(None, None, None)
            assert runner.exit_code == 0, runner.output[-5000:]

    def restart(self) -> Operator:
        self.stop()
        return self.start()

    def __enter__(self) -> Operator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def kopf_watched(registry: kopf.OperatorRegistry) -> set[str]:
    """The plurals kopf lists and watches for the handlers on `registry`."""
    handlers = [
        *registry._indexing.get_all_handlers(),
        *registry._watching.get_all_handlers(),
        *registry._spawning.get_all_handlers(),
        *registry._changing.get_all_handlers(),
    ]
    return {h.selector.plural or h.selector.any_name or "" for h in handlers}


def _reap_timers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel kopf's timer tasks now, and again every 50 ms until its loop is gone.

    A stopping kopf stops its timers, but not one spawned by a worker while it stops: such a
    timer sleeps on, and kopf gives it 5 s before cancelling it ("hung tasks"). A killed
    process would not wait, so neither does a killed operator here.
    """
    for task in asyncio.all_tasks(loop):
        if task.get_name().startswith("runner of "):
            task.cancel()
    loop.call_later(0.05, _reap_timers, loop)


# ---------------------------------------------------------------- waiting and the request log


def wait_for(
    probe: Callable[[], T], *, timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll until ``probe()`` is truthy; return it."""
    deadline = time.monotonic() + timeout
    while not (result := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout}s: {what or probe}")
        time.sleep(interval)
    return result


def report(message: str) -> None:
    """Print a measurement for the record (``pytest -s``, or ``-rA``). kopf's CLI runner swaps
    ``sys.stdout`` while an operator runs, so this writes to the process's own stdout."""
    stream = sys.__stdout__
    if stream is not None:
        stream.write(message + "\n")
        stream.flush()


def is_operator(call: ApiCall) -> bool:
    return call.user_agent.startswith(OPERATOR_AGENTS)


def operator_calls(emu: KubeEmulator, since: int = 0) -> list[ApiCall]:
    return [call for call in emu.calls(since) if is_operator(call)]


def operator_writes(emu: KubeEmulator, since: int = 0) -> list[Write]:
    return [call.as_write() for call in operator_calls(emu, since) if call.is_write]


def fail_next(emu: KubeEmulator, *criteria: Any, status: int = 500) -> None:
    """The next request matching ``criteria`` (kmock's, e.g. ``"patch v1/secrets",
    kmock.name("x")``) fails with ``status``. kmock's slices count every matching request
    since the start, so the slice begins after those seen so far."""

    def inject(kmock: Any) -> None:
        view = kmock[criteria]
        seen = len(view)
        view[seen : seen + 1] << status

    emu.inject(inject)


# ---------------------------------------------------------------- stored state


def mdb(emu: KubeEmulator, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
    return emu.get(MDB, name, namespace)


def status_of(emu: KubeEmulator, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    found = mdb(emu, name, namespace)
    return dict((found or {}).get("status") or {})


def condition(status: Mapping[str, Any], kind: str) -> dict[str, Any]:
    for item in status.get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return {}


def owned_objects(
    emu: KubeEmulator, slug: str, namespace: str = NAMESPACE
) -> dict[tuple[str, str], dict[str, Any]]:
    """Every object labelled as this database's, by (kind, name)."""
    selector = f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY},{names.LABEL_INSTANCE}={slug}"
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for kind, resource in OWNED_RESOURCES.items():
        for obj in emu.objects(resource, namespace, labels=selector):
            key = (kind, obj["metadata"]["name"])
            assert key not in found, f"two {kind}s named {key[1]}"
            found[key] = obj
    return found


def all_labelled(emu: KubeEmulator, namespace: str = NAMESPACE) -> list[tuple[str, str]]:
    """(kind, name) of every object any database of ours labelled, sorted; duplicates kept."""
    selector = f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY}"
    return sorted(
        (kind, obj["metadata"]["name"])
        for kind, resource in OWNED_RESOURCES.items()
        for obj in emu.objects(resource, namespace, labels=selector)
    )


def secret_value(secret: Mapping[str, Any] | None, key: str) -> str | None:
    """One decoded value of a stored Secret (tests compare it; they never print it)."""
    if secret is None:
        return None
    raw = (secret.get("data") or {}).get(key)
    return None if raw is None else base64.b64decode(raw).decode()


def app_password(emu: KubeEmulator, slug: str, namespace: str = NAMESPACE) -> str | None:
    return secret_value(emu.get("secrets", names.app_secret_name(slug), namespace), "PGPASSWORD")


def expected_objects(
    emu: KubeEmulator, slug: str, namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    """What the operator must have rendered for the stored ManagedDatabase and the stored
    credentials (the app Secret's password and the auth Secret's verifier)."""
    body = mdb(emu, slug, namespace)
    assert body is not None, f"no ManagedDatabase {namespace}/{slug}"
    password = app_password(emu, slug, namespace)
    assert password is not None, "no app Secret"
    verifier = secret_value(
        emu.get("secrets", names.auth_secret_name(slug), namespace), AUTH_VERIFIER_KEY
    )
    credentials = Credentials.adopt(password, verifier)
    rendered = render_objects(parse_database(body), credentials)
    stored = Observed.of(observe(o) for o in owned_objects(emu, slug, namespace).values())
    return [keep_immutable_claims(d, stored) if d["kind"] == "StatefulSet" else d for d in rendered]


def converged(emu: KubeEmulator, slug: str, namespace: str = NAMESPACE) -> bool:
    """Every rendered object stored exactly as rendered (by its spec hash), nothing else owned
    but the data PVC, and a status for the current generation."""
    body = mdb(emu, slug, namespace)
    if body is None or app_password(emu, slug, namespace) is None:
        return False
    status = body.get("status") or {}
    if status.get("observedGeneration") != body["metadata"].get("generation"):
        return False
    if status.get("phase") not in ("Provisioning", "Ready"):
        return False
    stored = owned_objects(emu, slug, namespace)
    expected = expected_objects(emu, slug, namespace)
    for document in expected:
        found = stored.get((document["kind"], document["metadata"]["name"]))
        if found is None or spec_hash(found) != spec_hash(document):
            return False
    extra = set(stored) - {(d["kind"], d["metadata"]["name"]) for d in expected}
    return extra <= {("PersistentVolumeClaim", names.data_claim_name(slug))}


def sent_objects(emu: KubeEmulator, since: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """Every whole object the operator sent since the mark: the bodies of its POSTs and of its
    server-side applies (merge patches are partial, and are left out), with a description."""
    requests = emu.call(lambda: list(emu.kmock))[since:]
    sent = []
    for request in requests:
        agent = request.headers.get("User-Agent", "")
        method = str(request.method.value if hasattr(request.method, "value") else request.method)
        content_type = request.headers.get("Content-Type", "")
        whole = method == "POST" or (method == "PATCH" and "apply-patch" in content_type)
        if agent.startswith(OPERATOR_AGENTS) and whole and isinstance(request.data, dict):
            doc = dict(request.data)
            if "kind" not in doc and request.url.path.startswith("/api/v1/"):
                # kopf posts Events without apiVersion/kind; the server takes them from the URL.
                plural = request.url.path.rstrip("/").split("/")[-1]
                doc = {"apiVersion": "v1", "kind": CORE_KINDS.get(plural, plural), **doc}
            sent.append((f"{method} {request.url.path}", doc))
    return sent


CORE_KINDS = {
    "events": "Event",
    "secrets": "Secret",
    "configmaps": "ConfigMap",
    "services": "Service",
    "persistentvolumeclaims": "PersistentVolumeClaim",
}


def kubernetes_problems(doc: Mapping[str, Any], version: str = "1.33") -> str | None:
    """None if ``doc`` validates strictly against Kubernetes' own schema, else the reason."""
    import kubernetes_validate  # heavy (its schemas); only the tests that validate load it

    try:
        kubernetes_validate.validate(dict(doc), version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return f"{e.message} at {'.'.join(str(p) for p in e.path)}"
    return None


def is_custom(doc: Mapping[str, Any]) -> bool:
    return str(doc.get("apiVersion", "")).startswith(f"{names.GROUP}/")


def strip_server_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An object as a client would send it: without what the server sets."""
    doc = copy.deepcopy(dict(obj))
    doc.pop("status", None)
    metadata = doc.get("metadata") or {}
    for key in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"):
        metadata.pop(key, None)
    return doc


def mdb_manifest(name: str, spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND_DATABASE,
        "metadata": {"name": name},
        "spec": dict(spec or {}),
    }


def data_claim(slug: str, size: str = "1Gi", namespace: str = NAMESPACE) -> dict[str, Any]:
    """The PVC the StatefulSet controller would make from the volumeClaimTemplate: its labels,
    no ownerReference (persistentVolumeClaimRetentionPolicy Retain)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": names.data_claim_name(slug),
            "namespace": namespace,
            "labels": names.common_labels(slug, names.COMPONENT_POSTGRES),
        },
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    }


# ---------------------------------------------------------------- watching from the test


class WatchRecorder:
    """Records every event of one watch (e.g. every version of our Secrets) from a thread, so
    that a value that was briefly stored and then replaced is not missed."""

    def __init__(self, emu: KubeEmulator, path: str) -> None:
        self.events: list[dict[str, Any]] = []
        self._connection = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=300)
        self._connection.request("GET", path, headers={"User-Agent": TEST_AGENT})
        self._response = self._connection.getresponse()
        assert self._response.status == 200, self._response.status
        self._thread = threading.Thread(target=self._read, name="watch-recorder", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
            while line := self._response.readline():
                self.events.append(json.loads(line))

    def __enter__(self) -> WatchRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[dict[str, Any]]:
        """Stop (idempotent); every event recorded."""
        sock = self._connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(2)
        self._thread.join(timeout=10)
        self._response.close()  # the socket's file: the socket is only closed with it
        self._connection.close()
        return self.events


# ---------------------------------------------------------------- backups: the controllers' part


def set_workloads_ready(kubectl: Any, slug: str) -> None:
    """The StatefulSet and Deployment controllers' part: one ready replica each (openly)."""
    for kind, name in (
        ("statefulset", names.postgres_name(slug)),
        ("deployment", names.pooler_name(slug)),
    ):
        kubectl(
            "patch",
            kind,
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            '{"status":{"replicas":1,"readyReplicas":1}}',
        )


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def start_job(client: Any, name: str, namespace: str = NAMESPACE) -> None:
    """The Job controller's part: the Job has started a pod."""
    from kubernetes.client import BatchV1Api

    BatchV1Api(client).patch_namespaced_job_status(
        name, namespace, {"status": {"startTime": utc_now(), "active": 1}}
    )


def finish_job(
    client: Any,
    name: str,
    *,
    succeeded: bool,
    message: str | None,
    namespace: str = NAMESPACE,
) -> None:
    """The Job controller's and the kubelet's part: the Job's pod (labelled with the Job's name,
    as the Job controller labels it) terminated with `message` as its termination message,
    then the Job's status says Complete or Failed."""
    from kubernetes.client import BatchV1Api, CoreV1Api

    core, batch = CoreV1Api(client), BatchV1Api(client)
    now = utc_now()
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name[:50]}-pod01",
            "labels": {names.LABEL_JOB_NAME: name, "job-name": name},
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "runner", "image": names.OPERATOR_IMAGE}],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    terminated: dict[str, Any] = {
        "exitCode": 0 if succeeded else 1,
        "reason": "Completed" if succeeded else "Error",
        "startedAt": now,
        "finishedAt": now,
    }
    if message is not None:
        terminated["message"] = message
    core.patch_namespaced_pod_status(
        pod["metadata"]["name"],  # type: ignore[index]
        namespace,
        {
            "status": {
                "phase": "Succeeded" if succeeded else "Failed",
                "containerStatuses": [
                    {
                        "name": "runner",
                        "image": names.OPERATOR_IMAGE,
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"terminated": terminated},
                    }
                ],
            }
        },
    )
    condition = (
        {"type": "Complete", "status": "True"}
        if succeeded
        else {
            "type": "Failed",
            "status": "True",
            "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit",
        }
    )
    status: dict[str, Any] = {
        "startTime": now,
        "active": 0,
        "conditions": [{**condition, "lastProbeTime": now, "lastTransitionTime": now}],
        ("succeeded" if succeeded else "failed"): 1,
    }
    if succeeded:
        status["completionTime"] = now
    batch.patch_namespaced_job_status(name, namespace, {"status": status})
