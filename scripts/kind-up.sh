#!/usr/bin/env bash
# Bring sotadb up on a local kind cluster, end to end (`make kind-up`).
#
#   scripts/kind-up.sh                           create/reuse the cluster, install, provision my-app
#   scripts/kind-up.sh --encryption-config-only  only write the EncryptionConfiguration
#
# Needs kind (>= 0.20), kubectl and a Docker engine, and a registry that serves kind's node
# image. That is why it cannot run on sotadb's own development machines (no registry answers
# there); it is written for developers' laptops and CI runners that have kind.
#
# 1. .kind/encryption-config.yaml: Secrets are encrypted at rest with aesgcm and a fresh random
#    32-byte key (mode 0600; git-ignored; never committed). An existing file is kept: the
#    cluster's Secrets are encrypted with it.
# 2. kind create cluster --name sotadb --config kind-config.yaml (skipped if it exists; given a
#    copy that names the EncryptionConfiguration by its absolute path).
# 3. scripts/build-images.sh postgres pgbouncer operator, then kind load docker-image.
# 4. The CRDs first (a custom resource cannot be mapped before its CRD exists), then
#    kubectl apply -k manifests/, and the operator's rollout.
# 5. manifests/examples/minimal.yaml, kubectl wait --for=condition=Ready mdb/my-app, and a check
#    that its Secret is stored encrypted in etcd.
#
# Environment: SOTADB_KIND_CLUSTER (default sotadb), KIND (default kind), KUBECTL (default
# kubectl), SOTADB_KIND_DIR (default .kind: where the EncryptionConfiguration and the cluster's
# kubeconfig are written).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=${SOTADB_KIND_CLUSTER:-sotadb}
KIND=${KIND:-kind}
KUBECTL=${KUBECTL:-kubectl}
KIND_DIR=${SOTADB_KIND_DIR:-$ROOT/.kind}
ENCRYPTION_CONFIG=$KIND_DIR/encryption-config.yaml
KUBECONFIG_FILE=$KIND_DIR/kubeconfig
NAMESPACE=sotadb-system

say() { printf 'kind-up: %s\n' "$*"; }
die() { printf 'kind-up: ERROR: %s\n' "$*" >&2; exit 1; }

write_encryption_config() {
    if [ -s "$ENCRYPTION_CONFIG" ]; then
        say "$ENCRYPTION_CONFIG exists; kept (the cluster's Secrets are encrypted with it)"
        return 0
    fi
    mkdir -p "$KIND_DIR"
    chmod 0700 "$KIND_DIR"
    local key tmp
    key=$(head -c 32 /dev/urandom | base64 | tr -d '\n')
    [ "$(printf '%s' "$key" | base64 -d | wc -c)" -eq 32 ] || die "could not make a 32-byte key"
    tmp=$(umask 077 && mktemp "$KIND_DIR/.encryption-config.XXXXXX")
    # aesgcm first: it encrypts every new write. identity last: Secrets written before
    # encryption was on stay readable.
    cat >"$tmp" <<EOF
# Written by scripts/kind-up.sh: the kind cluster's key for Secrets at rest. Do not commit.
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - secrets
    providers:
      - aesgcm:
          keys:
            - name: key1
              secret: $key
      - identity: {}
EOF
    chmod 0600 "$tmp"
    mv "$tmp" "$ENCRYPTION_CONFIG"
    say "wrote $ENCRYPTION_CONFIG (aesgcm, a fresh 32-byte key, mode 0600)"
}

case ${1:-} in
    --encryption-config-only) write_encryption_config; exit 0 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    "") ;;
    *) die "unknown argument $1" ;;
esac

for tool in "$KIND" "$KUBECTL" docker; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
k() { "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

cd "$ROOT"
write_encryption_config

if "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    say "cluster $CLUSTER exists; reused"
else
    # kind resolves a relative hostPath against its working directory; the copy it is given
    # names the EncryptionConfiguration by absolute path, wherever SOTADB_KIND_DIR points.
    config=$KIND_DIR/kind-config.yaml
    sed "s#hostPath: \.kind/encryption-config\.yaml#hostPath: $ENCRYPTION_CONFIG#" \
        kind-config.yaml >"$config"
    grep -qF "hostPath: $ENCRYPTION_CONFIG" "$config" \
        || die "kind-config.yaml no longer mounts .kind/encryption-config.yaml"
    say "creating cluster $CLUSTER"
    "$KIND" create cluster --name "$CLUSTER" --config "$config" --wait 180s
fi
"$KIND" get kubeconfig --name "$CLUSTER" >"$KUBECONFIG_FILE"
chmod 0600 "$KUBECONFIG_FILE"

bash "$ROOT/scripts/build-images.sh" postgres pgbouncer operator
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n1)
images=(sotadb/postgres:17 sotadb/pgbouncer:1.24 "sotadb/operator:$version")
say "loading ${images[*]} into $CLUSTER"
"$KIND" load docker-image --name "$CLUSTER" "${images[@]}"

say "installing the CRDs, then manifests/"
k apply -k crds/
k apply -f manifests/kopf-peering-crds.yaml
k wait --for=condition=Established --timeout=60s \
    crd/manageddatabases.sota.io crd/databasebackups.sota.io \
    crd/clusterkopfpeerings.kopf.dev crd/kopfpeerings.kopf.dev
k apply -k manifests/
# The image tag does not change when its content does: restart so the pod runs what was loaded.
k -n "$NAMESPACE" rollout restart deployment/sotadb-operator
k -n "$NAMESPACE" rollout status deployment/sotadb-operator --timeout=180s

say "provisioning my-app (manifests/examples/minimal.yaml, namespace default)"
k apply -f manifests/examples/minimal.yaml
if ! k wait --for=condition=Ready mdb/my-app --timeout=180s; then
    k get mdb/my-app -o yaml >&2 || true
    k -n "$NAMESPACE" logs deployment/sotadb-operator --tail=50 >&2 || true
    die "my-app did not become Ready"
fi

# Proof of encryption at rest: etcd holds the app Secret behind the aesgcm provider's prefix.
# (The etcd image has no shell: the value comes out whole, and only its prefix is read here.)
etcd_pod=$(k -n kube-system get pods -l component=etcd -o jsonpath='{.items[0].metadata.name}')
stored=$(mktemp)
trap 'rm -f "$stored"' EXIT
k -n kube-system exec "$etcd_pod" -- etcdctl \
    --cacert /etc/kubernetes/pki/etcd/ca.crt \
    --cert /etc/kubernetes/pki/etcd/healthcheck-client.crt \
    --key /etc/kubernetes/pki/etcd/healthcheck-client.key \
    get /registry/secrets/default/sota-db-my-app-app --print-value-only >"$stored"
prefix=$(head -c 23 "$stored" | tr -d '\0')
[ "$prefix" = "k8s:enc:aesgcm:v1:key1:" ] \
    || die "Secret default/sota-db-my-app-app is not stored encrypted with aesgcm (etcd value starts '$prefix')"
say "Secret default/sota-db-my-app-app is encrypted at rest in etcd (aesgcm, key1)"

k get mdb/my-app
say "ready. KUBECONFIG=$KUBECONFIG_FILE; the app reads DATABASE_URL from Secret sota-db-my-app-app:"
say "  kubectl --kubeconfig $KUBECONFIG_FILE get secret sota-db-my-app-app -o jsonpath='{.data.DATABASE_URL}' | base64 -d"
