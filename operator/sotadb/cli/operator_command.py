"""`sotadb operator`: run the Kubernetes operator (kopf)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from sotadb import names


def operator(
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Watch only these namespaces (default: all)."),
    ] = None,
    liveness: Annotated[
        str, typer.Option(help="Liveness endpoint, e.g. http://0.0.0.0:8080/healthz.")
    ] = "http://0.0.0.0:8080/healthz",
    peering: Annotated[
        str, typer.Option(help="Peering name: replicas with the same name never both act.")
    ] = "sotadb",
    kubeconfig: Annotated[str | None, typer.Option(help="Outside a cluster: this file.")] = None,
    postgres_image: Annotated[str, typer.Option()] = names.POSTGRES_IMAGE,
    pooler_image: Annotated[str, typer.Option()] = names.POOLER_IMAGE,
    resync_seconds: Annotated[float, typer.Option(help="Level-based resync period.")] = 300.0,
    json_logs: Annotated[bool, typer.Option("--json-logs/--plain-logs")] = True,
) -> None:
    """Reconcile ManagedDatabases into running workloads (runs until stopped)."""
    # kopf imports the `kubernetes` client when it is installed, only to recognise its model
    # objects, which this operator never passes it: ~60 MB of memory for nothing. The operator
    # talks to the API without it (sotadb/kube/api.py, connection.py).
    if "kubernetes" not in sys.modules:
        sys.modules["kubernetes"] = None  # type: ignore[assignment]  # import fails: skipped
    # Imported here: kopf costs ~0.5 s of start-up that `sotadb up` and friends need not pay.
    import kopf

    from sotadb.kube.backup_handlers import register_backups
    from sotadb.kube.handlers import OperatorConfig, register
    from sotadb.kube.injection import register_injection
    from sotadb.render import Images

    registry = kopf.OperatorRegistry()
    config = OperatorConfig(
        images=Images(postgres=postgres_image, pooler=pooler_image),
        kubeconfig=kubeconfig,
        resync_seconds=resync_seconds,
        namespaces=tuple(namespace or ()),
    )
    register(registry, config)
    register_backups(registry)
    register_injection(registry, config)
    kopf.configure(log_format=kopf.LogFormat.JSON if json_logs else kopf.LogFormat.PLAIN)
    kopf.run(
        registry=registry,
        clusterwide=not namespace,
        namespaces=namespace or (),
        liveness_endpoint=liveness,
        peering_name=peering,
        standalone=False,
    )
