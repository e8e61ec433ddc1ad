"""`sotadb operator`: run the Kubernetes operator (kopf)."""

from __future__ import annotations

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
    # Imported here: kopf costs ~0.5 s of start-up that `sotadb up` and friends need not pay.
    import kopf

    from sotadb.kube.handlers import OperatorConfig, register
    from sotadb.kube.injection import register_injection
    from sotadb.render import Images

    registry = kopf.OperatorRegistry()
    config = OperatorConfig(
        images=Images(postgres=postgres_image, pooler=pooler_image),
        kubeconfig=kubeconfig,
        resync_seconds=resync_seconds,
    )
    register(registry, config)
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
