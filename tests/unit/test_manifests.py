"""manifests/ (the kustomize base), kind-config.yaml and scripts/kind-up.sh.

- The base builds with `kubectl kustomize`, and every object in it is valid: built-in kinds with
  kubernetes-validate (strict, Kubernetes 1.30 and 1.33), custom resources against their CRD.
- The operator's ClusterRole grants exactly what the code uses, derived from the code: kopf's
  registry (what it watches and patches), every KubeApi call in sotadb/kube (resolved to the
  resource it touches), the rendered objects (what the reconcile writes, and the ownerReferences
  they carry), plus a short table of what kopf itself does, each entry citing where. A verb used
  without RBAC, or RBAC that nothing uses, fails here.
- The operator's pod is "restricted" and probed on kopf's liveness endpoint.
- kind-config.yaml mounts the EncryptionConfiguration kind-up.sh writes into the API server.
"""

from __future__ import annotations

import ast
import base64
import inspect
import os
import shutil
import stat
import subprocess
import tomllib
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import kopf
import kubernetes_validate
import pytest
import yaml
from crdschema import Crd

from sotadb import names
from sotadb.cli.operator_command import operator as operator_command
from sotadb.credentials import Credentials
from sotadb.kube import resources, watch
from sotadb.kube.backup_handlers import register_backups
from sotadb.kube.handlers import OperatorConfig, register
from sotadb.kube.injection import register_injection
from sotadb.render import render_objects
from sotadb.spec import parse_database

ROOT: Final = Path(__file__).resolve().parents[2]
MANIFESTS: Final = ROOT / "manifests"
KUBE_PACKAGE: Final = ROOT / "operator" / "sotadb" / "kube"
KUBERNETES_VERSIONS: Final = ("1.30", "1.33")
NAMESPACE: Final = "sotadb-system"
OPERATOR: Final = "sotadb-operator"
OPERATOR_UID: Final = 10001

Doc = dict[str, Any]
Grant = tuple[str, str, str]  # (apiGroup, resource or resource/subresource, verb)


# ------------------------------------------------------------------------------ the build


@pytest.fixture(scope="module")
def built() -> list[Doc]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to build manifests/ (make system-deps installs it)"
    result = subprocess.run(
        [kubectl, "kustomize", str(MANIFESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(built: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in built if d["kind"] == kind and name in (None, d["metadata"].get("name"))]
    assert len(found) == 1, f"expected one {kind} {name or ''} in the build, found {len(found)}"
    return found[0]


def crds(built: list[Doc]) -> dict[tuple[str, str], Doc]:
    """(group, kind) → CRD, for every CRD in the build."""
    return {
        (d["spec"]["group"], d["spec"]["names"]["kind"]): d
        for d in built
        if d["kind"] == "CustomResourceDefinition"
    }


def group_of(doc: Mapping[str, Any]) -> str:
    api_version = str(doc["apiVersion"])
    return api_version.split("/")[0] if "/" in api_version else ""


def cli_default(option: str) -> Any:
    """A default of `sotadb operator`: what the Deployment gets when args leave it out."""
    return inspect.signature(operator_command).parameters[option].default


def operator_container(built: list[Doc]) -> Doc:
    pod = find(built, "Deployment", OPERATOR)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return dict(container)


def test_the_base_installs_the_operator_and_everything_it_needs(built: list[Doc]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in built}
    assert kinds == {
        ("CustomResourceDefinition", f"{names.PLURAL_DATABASE}.{names.GROUP}"),
        ("CustomResourceDefinition", f"{names.PLURAL_BACKUP}.{names.GROUP}"),
        ("CustomResourceDefinition", f"{names.PLURAL_RESTORE}.{names.GROUP}"),
        ("CustomResourceDefinition", "clusterkopfpeerings.kopf.dev"),
        ("CustomResourceDefinition", "kopfpeerings.kopf.dev"),
        ("Namespace", NAMESPACE),
        ("ServiceAccount", OPERATOR),
        ("ClusterRole", OPERATOR),
        ("ClusterRoleBinding", OPERATOR),
        ("Deployment", OPERATOR),
        ("ClusterKopfPeering", cli_default("peering")),
    }
    for doc in built:
        if doc["kind"] in ("ServiceAccount", "Deployment"):
            assert doc["metadata"]["namespace"] == NAMESPACE


def test_the_base_carries_the_repositorys_crds_unchanged(built: list[Doc]) -> None:
    for path in sorted((ROOT / "crds").glob("*.sota.io.yaml")):
        crd = yaml.safe_load(path.read_text())
        in_build = find(built, "CustomResourceDefinition", crd["metadata"]["name"])
        assert in_build["spec"] == crd["spec"], path.name


@pytest.mark.parametrize("kube", KUBERNETES_VERSIONS)
def test_every_built_in_object_is_valid(built: list[Doc], kube: str) -> None:
    custom = {group for group, _ in crds(built)}
    checked = 0
    for doc in built:
        if group_of(doc) in custom:
            continue
        kubernetes_validate.validate(doc, kube, strict=True)
        checked += 1
    assert checked == len(built) - 1  # all but the ClusterKopfPeering


def test_every_custom_resource_is_admitted_by_its_crd(built: list[Doc]) -> None:
    by_kind = crds(built)
    custom = [d for d in built if (group_of(d), d["kind"]) in by_kind]
    assert [d["kind"] for d in custom] == ["ClusterKopfPeering"]
    for doc in custom:
        crd = by_kind[(group_of(doc), doc["kind"])]
        assert Crd(crd).admit(doc) == []
        assert crd["spec"]["scope"] == (
            "Namespaced" if "namespace" in doc["metadata"] else "Cluster"
        )


def test_kopf_peering_crds_are_the_kopf_dev_ones_without_a_status_subresource(
    built: list[Doc],
) -> None:
    """kopf 1.45 looks for kopf.dev/v1 (and the legacy zalando.org/v1, which cannot coexist);
    it merge-patches `status` on the object itself unless the CRD has a status subresource."""
    by_kind = crds(built)
    for kind, scope in (("ClusterKopfPeering", "Cluster"), ("KopfPeering", "Namespaced")):
        crd = by_kind[("kopf.dev", kind)]
        assert crd["spec"]["scope"] == scope
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1"
        assert "subresources" not in version
        properties = version["schema"]["openAPIV3Schema"]["properties"]
        for field in ("spec", "status"):
            assert properties[field]["x-kubernetes-preserve-unknown-fields"] is True


# ------------------------------------------------------------------------------ RBAC, granted


def cluster_role(built: list[Doc]) -> Doc:
    return find(built, "ClusterRole", OPERATOR)


def granted(role: Mapping[str, Any]) -> set[Grant]:
    grants = set()
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    grants.add((group, resource, verb))
    return grants


def test_cluster_role_has_no_wildcards(built: list[Doc]) -> None:
    for rule in cluster_role(built)["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert all("*" not in value for value in rule[field]), rule


def test_the_role_is_bound_to_the_operators_service_account(built: list[Doc]) -> None:
    binding = find(built, "ClusterRoleBinding", OPERATOR)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": OPERATOR,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE}
    ]
    pod = find(built, "Deployment", OPERATOR)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == OPERATOR
    assert pod["automountServiceAccountToken"] is True


# ------------------------------------------------------------------------------ RBAC, needed

# How the API server authorizes each KubeApi method (api.py): the RBAC verbs of its request.
# A server-side apply that creates the object is authorized as `create` as well as `patch`
# (apiserver endpoints/handlers/patch.go checks createAuthorizerAttributes, Verb "create").
REQUEST_VERBS: Final[Mapping[str, frozenset[str]]] = {
    "get": frozenset({"get"}),
    "list": frozenset({"list"}),
    "create": frozenset({"create"}),
    "apply": frozenset({"patch", "create"}),
    "patch": frozenset({"patch"}),
    "strategic_patch": frozenset({"patch"}),
    "delete": frozenset({"delete"}),
}
# The HTTP method each of them sends (checked against api.py, so a new method needs a row).
REQUEST_METHODS: Final = {
    "get": "GET",
    "list": "GET",
    "create": "POST",
    "apply": "PATCH",
    "patch": "PATCH",
    "strategic_patch": "PATCH",
    "delete": "DELETE",
}

# What kopf 1.45 does by itself for an operator that runs cluster-wide (no --namespace) with a
# named peering (`--peering`, mandatory): each entry says where in kopf.
KOPF_CLUSTER_WIDE: Final[Mapping[Grant, str]] = {
    ("", "events", "create"): (
        "Events for kopf.event/info/warn and for handler errors: POST only "
        "(kopf/_cogs/clients/events.py post_event)"
    ),
    ("kopf.dev", "clusterkopfpeerings", "list"): (
        "peering observer: a watcher over the peering resource "
        "(kopf/_core/reactor/orchestration.py spawn_missing_peerings)"
    ),
    ("kopf.dev", "clusterkopfpeerings", "watch"): "the same watcher",
    ("kopf.dev", "clusterkopfpeerings", "patch"): (
        "keep-alives: a merge patch of status on the object, the CRD has no status subresource "
        "(kopf/_core/engines/peering.py touch → kopf/_cogs/clients/patching.py patch_obj)"
    ),
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"): (
        "resource observer: notices CRDs added or changed after start-up "
        "(kopf/_core/reactor/observation.py resource_observer; without it, a warning)"
    ),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"): "the same observer",
    # Not needed cluster-wide: namespaces (list/watch only when started with --namespace,
    # observation.py namespace_observer) and kopfpeerings (namespaced peering).
}


def catalog() -> dict[tuple[str, str], resources.Resource]:
    """Every Resource sotadb.kube.resources defines, by (group, plural)."""
    return {
        (value.group, value.plural): value
        for value in vars(resources).values()
        if isinstance(value, resources.Resource)
    }


def grants_for(resource: resources.Resource, verbs: Iterable[str]) -> set[Grant]:
    return {(resource.group, resource.plural, verb) for verb in verbs}


def kopf_handler_needs(built: list[Doc]) -> set[Grant]:
    """What kopf does for the registered handlers. Mirrors kopf/_core/reactor/observation.py
    revise_resources: indexing, watching, spawning and changing handlers are watched (list,
    watch); spawning and changing ones are patched (finalizers, progress and diff-base
    annotations), their status through /status where the CRD has that subresource."""
    registry = kopf.OperatorRegistry()
    register(registry, OperatorConfig())
    register_backups(registry)
    register_injection(registry, OperatorConfig())
    watched = [
        *registry._indexing.get_all_handlers(),
        *registry._watching.get_all_handlers(),
        *registry._spawning.get_all_handlers(),
        *registry._changing.get_all_handlers(),
    ]
    patched = [*registry._spawning.get_all_handlers(), *registry._changing.get_all_handlers()]
    assert not registry._webhooks.get_all_handlers(), "webhooks need their own RBAC rows"
    known = catalog()
    by_plural = {
        (d["spec"]["group"], d["spec"]["names"]["plural"]): d for d in crds(built).values()
    }

    def resource_of(handler: Any) -> resources.Resource:
        selector = handler.selector
        key = (selector.group or "", selector.plural or selector.any_name)
        assert key in known, f"handler {handler.id} serves {key}, not in sotadb.kube.resources"
        return known[key]

    needs: set[Grant] = set()
    for handler in watched:
        needs |= grants_for(resource_of(handler), ("list", "watch"))
    for handler in patched:
        resource = resource_of(handler)
        needs |= grants_for(resource, ("patch",))
        crd = by_plural.get((resource.group, resource.plural))
        if crd is not None and any(
            "status" in (v.get("subresources") or {}) for v in crd["spec"]["versions"]
        ):
            needs.add((resource.group, f"{resource.plural}/status", "patch"))
    return needs


def owned_watch_needs() -> set[Grant]:
    """The operator's own list-and-watch of every owned kind (sotadb/kube/watch.py), which
    keeps its snapshots of them instead of kopf's indexes."""
    return {grant for r in watch.WATCHED for grant in grants_for(r, ("list", "watch"))}


def api_request_methods() -> dict[str, str]:
    """KubeApi method → the HTTP method it sends (its `self._request("METHOD", ...)` call)."""
    tree = ast.parse((KUBE_PACKAGE / "api.py").read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "KubeApi"]
    methods = {}
    for function in cls.body:
        if not isinstance(function, ast.FunctionDef) or function.name.startswith("_"):
            continue
        for node in ast.walk(function):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "_request"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                methods[function.name] = str(node.args[0].value)
    return methods


def test_every_request_method_of_the_api_client_has_its_rbac_verbs() -> None:
    assert api_request_methods() == REQUEST_METHODS
    assert set(REQUEST_VERBS) == set(REQUEST_METHODS)


class CallSites:
    """KubeApi calls in one module of sotadb/kube, each resolved to the resources it touches."""

    def __init__(self, path: Path, rendered: Mapping[str, resources.Resource]) -> None:
        self.path = path
        self.tree = ast.parse(path.read_text())
        self.rendered = rendered
        self.parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
        self.functions = {n.name: n for n in ast.walk(self.tree) if isinstance(n, ast.FunctionDef)}

    def calls(self) -> Iterator[tuple[ast.Call, str]]:
        for node in ast.walk(self.tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in REQUEST_VERBS
                and self._is_api(node.func.value)
            ):
                yield node, node.func.attr

    @staticmethod
    def _is_api(node: ast.expr) -> bool:
        return (isinstance(node, ast.Name) and node.id == "api") or (
            isinstance(node, ast.Attribute) and node.attr == "api"
        )

    def where(self, node: ast.AST) -> str:
        return f"{self.path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"

    def needs(self) -> set[Grant]:
        needs: set[Grant] = set()
        for call, method in self.calls():
            subresource = next(
                (
                    str(k.value.value)
                    for k in call.keywords
                    if k.arg == "subresource" and isinstance(k.value, ast.Constant)
                ),
                None,
            )
            for resource in self.resources_of(call, method):
                plural = f"{resource.plural}/{subresource}" if subresource else resource.plural
                needs |= {(resource.group, plural, verb) for verb in REQUEST_VERBS[method]}
        return needs

    def resources_of(self, call: ast.Call, method: str) -> set[resources.Resource]:
        if method in ("create", "apply"):  # a document: its kind decides
            literal = self._literal_kind(call)
            if literal is not None:
                return {resources.BY_KIND[literal]}
            kind = self._kind_guard(call)
            if kind is None:
                return set(self.rendered.values())
            assert kind in self.rendered, f"{self.where(call)}: {kind} is never rendered"
            return {self.rendered[kind]}
        argument = call.args[0] if call.args else None
        if (constant := self._resource_constant(argument)) is not None:
            return {constant}
        if isinstance(argument, ast.Name):
            loop = self._binding_loop(call, argument.id)
            if loop is not None:
                return self._resources_in(loop.iter)
        raise AssertionError(
            f"{self.where(call)}: cannot tell which resource api.{method}(...) touches; "
            "pass resources.NAME, loop over resources, or teach this test"
        )

    @staticmethod
    def _resource_constant(node: ast.AST | None) -> resources.Resource | None:
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "resources"
        ):
            value = getattr(resources, node.attr)
            return value if isinstance(value, resources.Resource) else None  # not the class
        return None

    def _binding_loop(self, node: ast.AST, name: str) -> ast.For | None:
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, ast.For) and any(
                isinstance(t, ast.Name) and t.id == name for t in ast.walk(node.target)
            ):
                return node
        return None

    def _resources_in(self, node: ast.expr) -> set[resources.Resource]:
        """The resources a loop iterates over: resources.OWNED, a tuple of resources.NAME, or a
        call of a function of this module that names resources.NAME."""
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            value = getattr(resources, node.attr)
            return set(value) if isinstance(value, tuple) else {value}
        if isinstance(node, (ast.Tuple, ast.List)):
            return {r for e in node.elts if (r := self._resource_constant(e)) is not None}
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            function = self.functions[node.func.id]
            found = {r for n in ast.walk(function) if (r := self._resource_constant(n)) is not None}
            assert found, f"{self.where(node)}: {node.func.id} names no resources.NAME"
            return found
        raise AssertionError(f"{self.where(node)}: cannot resolve the loop's resources")

    def _literal_kind(self, call: ast.Call) -> str | None:
        """`api.create({..., "kind": K, ...})`, or of a name the enclosing function assigns such
        a dict literal once: K (a string, or a `names.KIND_*` constant)."""
        argument = call.args[0] if call.args else None
        if isinstance(argument, ast.Name):
            node: ast.AST = call
            while node in self.parents and not isinstance(node, ast.FunctionDef):
                node = self.parents[node]
            values = [
                n.value
                for n in ast.walk(node)
                if isinstance(n, (ast.Assign, ast.AnnAssign))
                and n.value is not None
                and any(
                    isinstance(t, ast.Name) and t.id == argument.id
                    for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                )
            ]
            argument = values[0] if len(values) == 1 else None
        if (
            isinstance(argument, ast.Call)
            and isinstance(argument.func, ast.Name)
            and argument.func.id in RENDERED_KINDS
        ):
            return RENDERED_KINDS[argument.func.id]
        if not isinstance(argument, ast.Dict):
            return None
        for key, value in zip(argument.keys, argument.values, strict=True):
            if isinstance(key, ast.Constant) and key.value == "kind":
                if isinstance(value, ast.Constant):
                    return str(value.value)
                if (
                    isinstance(value, ast.Attribute)
                    and isinstance(value.value, ast.Name)
                    and value.value.id == "names"
                ):
                    return str(getattr(names, value.attr))
        return None

    def _kind_guard(self, call: ast.Call) -> str | None:
        """`if document["kind"] == "Secret" ...:` around the call (in its body): that kind."""
        node: ast.AST = call
        while node in self.parents:
            parent = self.parents[node]
            if isinstance(parent, ast.If) and node in parent.body:
                for compare in ast.walk(parent.test):
                    if (
                        isinstance(compare, ast.Compare)
                        and isinstance(compare.left, ast.Subscript)
                        and isinstance(compare.left.slice, ast.Constant)
                        and compare.left.slice.value == "kind"
                        and isinstance(compare.ops[0], ast.Eq)
                        and isinstance(compare.comparators[0], ast.Constant)
                    ):
                        return str(compare.comparators[0].value)
            node = parent
        return None


# Renderers whose result the operator POSTs as is (`job = backup_job(...); api.create(job)`):
# the kind each renders (test_renderers_render_the_kinds_the_scan_assumes checks it).
RENDERED_KINDS: Final = {"backup_job": "Job", "restore_job": "Job", "forget_job": "Job"}


def test_renderers_render_the_kinds_the_scan_assumes() -> None:
    from sotadb.render import backup as render_backup

    (doc,) = [
        d
        for d in yaml.safe_load_all((MANIFESTS / "examples" / "minimal.yaml").read_text())
        if d and d["kind"] == names.KIND_DATABASE
    ]
    doc["metadata"] = {"namespace": "shop", **doc["metadata"], "uid": "0-1-2-3"}
    db = parse_database(doc)
    owner = {"apiVersion": "sota.io/v1", "kind": "DatabaseBackup", "name": "b", "uid": "u"}
    rendered = {
        "backup_job": render_backup.backup_job(db, "b", owner),
        "restore_job": render_backup.restore_job(db, db.slug, db.spec.backups, "b", "r", owner),
        "forget_job": render_backup.forget_job(db, "b", owner),
    }
    assert {name: d["kind"] for name, d in rendered.items()} == RENDERED_KINDS
    scanned = api_call_needs(rendered_objects())
    assert ("batch", "jobs", "create") in scanned
    assert ("", "pods", "list") in scanned  # a finished Job's termination message


def rendered_objects() -> list[Doc]:
    """Every object the examples render to, as the operator renders them (with a uid)."""
    documents = []
    for path in sorted((MANIFESTS / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == names.KIND_DATABASE:
                doc["metadata"] = {"namespace": "shop", **doc["metadata"], "uid": "0-1-2-3"}
                database = parse_database(doc)
                documents += render_objects(database, Credentials.generate())
    assert documents
    return documents


def owner_reference_needs(rendered: list[Doc]) -> set[Grant]:
    """An ownerReference with blockOwnerDeletion may be set only by who may update the owner's
    finalizers, where the OwnerReferencesPermissionEnforcement admission plugin is on."""
    needs = set()
    for document in rendered:
        for owner in document["metadata"].get("ownerReferences") or []:
            if owner.get("blockOwnerDeletion"):
                resource = resources.BY_KIND[owner["kind"]]
                assert resource.api_version == owner["apiVersion"]
                needs.add((resource.group, f"{resource.plural}/finalizers", "update"))
    return needs


def api_call_needs(rendered: list[Doc]) -> set[Grant]:
    kinds = {d["kind"]: resources.BY_KIND[d["kind"]] for d in rendered}
    needs: set[Grant] = set()
    modules = sorted(p for p in KUBE_PACKAGE.glob("*.py") if p.name != "api.py")
    for path in modules:
        needs |= CallSites(path, kinds).needs()
    return needs


def kopf_framework_needs(built: list[Doc]) -> set[Grant]:
    """KOPF_CLUSTER_WIDE applies as long as the Deployment runs the operator cluster-wide with
    a mandatory peering, as the command's defaults do."""
    args = operator_container(built)["args"]
    assert args[0] == "operator"
    assert not {"--namespace", "-n", "--standalone"} & {a.split("=")[0] for a in args}, args
    assert cli_default("namespace") is None
    assert cli_default("peering")
    return set(KOPF_CLUSTER_WIDE)


def needed(built: list[Doc]) -> set[Grant]:
    rendered = rendered_objects()
    return (
        kopf_handler_needs(built)
        | owned_watch_needs()
        | api_call_needs(rendered)
        | owner_reference_needs(rendered)
        | kopf_framework_needs(built)
    )


def test_the_call_site_scan_sees_the_calls_it_must() -> None:
    """The scan is only as good as what it finds: pin a few calls it must resolve."""
    rendered = rendered_objects()
    needs = api_call_needs(rendered)
    assert (names.GROUP, f"{names.PLURAL_DATABASE}/status", "patch") in needs
    assert ("", "persistentvolumeclaims", "delete") in needs  # deletionPolicy: Delete
    assert ("", "secrets", "create") in needs  # the app Secret, POSTed
    assert {("apps", "statefulsets", "patch"), ("apps", "statefulsets", "create")} <= needs
    assert (names.GROUP, names.PLURAL_DATABASE, "create") in needs  # the injection's database


def test_cluster_role_grants_exactly_what_the_code_needs(built: list[Doc]) -> None:
    grants = granted(cluster_role(built))
    needs = needed(built)
    missing = sorted(needs - grants)
    unused = sorted(grants - needs)
    assert (missing, unused) == ([], []), (
        f"manifests/rbac.yaml is out of step with the code.\n"
        f"  used by the code but not granted: {missing}\n"
        f"  granted but used by nothing: {unused}"
    )


# ------------------------------------------------------------------------------ the pod


def test_operator_pod_is_restricted(built: list[Doc]) -> None:
    deployment = find(built, "Deployment", OPERATOR)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": OPERATOR_UID,
        "runAsGroup": OPERATOR_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    container = operator_container(built)
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == OPERATOR_UID
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not context.get("privileged")
    # The only writable path: /tmp, a small in-memory emptyDir.
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    (volume,) = pod["volumes"]
    assert volume["name"] == "tmp"
    assert volume["emptyDir"]["medium"] == "Memory"
    namespace = find(built, "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_operator_image_and_resources(built: list[Doc]) -> None:
    container = operator_container(built)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert container["image"] == names.OPERATOR_IMAGE == f"sotadb/operator:{version}"
    assert container["imagePullPolicy"] == "IfNotPresent"
    # Sized from bench/operator_scale.py's peak RSS at 1,000 databases (see operator.yaml).
    assert container["resources"] == {
        "requests": {"cpu": "50m", "memory": "192Mi"},
        "limits": {"memory": "384Mi"},
    }


def test_probes_hit_kopfs_liveness_endpoint(built: list[Doc]) -> None:
    container = operator_container(built)
    liveness = urllib.parse.urlsplit(cli_default("liveness"))
    assert not any(a.startswith("--liveness") for a in container["args"])
    # All interfaces: the kubelet probes the pod's IP.
    everywhere = "0.0.0.0"  # noqa: S104
    assert (liveness.hostname, liveness.port, liveness.path) == (everywhere, 8080, "/healthz")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        http = container[probe]["httpGet"]
        port = ports.get(http["port"], http["port"])
        assert (port, http["path"]) == (liveness.port, liveness.path), probe


def test_one_replica_because_equal_kopf_priorities_pause_every_peer(built: list[Doc]) -> None:
    """kopf pauses all peers that share a priority; `sotadb operator` sets none (0)."""
    deployment = find(built, "Deployment", OPERATOR)
    assert "priority" not in inspect.signature(operator_command).parameters
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


# ------------------------------------------------------------------------------ kind


def test_kind_config_mounts_the_encryption_config_into_the_api_server() -> None:
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["kind"] == "Cluster"
    (node,) = config["nodes"]
    assert node["role"] == "control-plane"
    (mount,) = node["extraMounts"]
    assert mount["hostPath"] == ".kind/encryption-config.yaml"
    assert mount["readOnly"] is True
    path = mount["containerPath"]
    volume = {
        "name": "encryption-config",
        "hostPath": path,
        "mountPath": path,
        "readOnly": True,
        "pathType": "File",
    }

    (merge,) = [yaml.safe_load(p) for p in config["kubeadmConfigPatches"]]
    assert (merge["apiVersion"], merge["kind"]) == (
        "kubeadm.k8s.io/v1beta3",
        "ClusterConfiguration",
    )
    assert merge["apiServer"]["extraArgs"] == {"encryption-provider-config": path}
    assert merge["apiServer"]["extraVolumes"] == [volume]

    (json6902,) = config["kubeadmConfigPatchesJSON6902"]
    assert (json6902["group"], json6902["version"], json6902["kind"]) == (
        "kubeadm.k8s.io",
        "v1beta4",
        "ClusterConfiguration",
    )
    assert yaml.safe_load(json6902["patch"]) == [
        {
            "op": "add",
            "path": "/apiServer/extraArgs/-",
            "value": {"name": "encryption-provider-config", "value": path},
        },
        {"op": "add", "path": "/apiServer/extraVolumes", "value": [volume]},
    ]


def write_encryption_config(directory: Path) -> Doc:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "kind-up.sh"), "--encryption-config-only"],
        env={**os.environ, "SOTADB_KIND_DIR": str(directory)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    path = directory / "encryption-config.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    document: Doc = yaml.safe_load(path.read_text())
    return document


def key_of(config: Doc) -> bytes:
    (rule,) = config["resources"]
    aesgcm, _identity = rule["providers"]
    (key,) = aesgcm["aesgcm"]["keys"]
    return base64.b64decode(key["secret"], validate=True)


def test_kind_up_writes_aesgcm_with_a_fresh_32_byte_key(tmp_path: Path) -> None:
    config = write_encryption_config(tmp_path / "a")
    assert config["apiVersion"] == "apiserver.config.k8s.io/v1"
    assert config["kind"] == "EncryptionConfiguration"
    (rule,) = config["resources"]
    assert rule["resources"] == ["secrets"]
    assert [next(iter(p)) for p in rule["providers"]] == ["aesgcm", "identity"]
    assert rule["providers"][1] == {"identity": {}}
    assert rule["providers"][0]["aesgcm"]["keys"][0]["name"] == "key1"
    key = key_of(config)
    assert len(key) == 32
    assert key_of(write_encryption_config(tmp_path / "b")) != key
    # An existing configuration is kept: the cluster's Secrets are encrypted with it.
    assert key_of(write_encryption_config(tmp_path / "a")) == key
