#!/usr/bin/env bash
# Build sotadb's container images on the local Docker engine.
#
#   scripts/build-images.sh [--force] [postgres] [pgbouncer] [operator]   (default: the first two)
#
# 1. scripts/ensure-docker.sh       (start dockerd if nothing answers)
# 2. scripts/ensure-base-image.sh   (debian:trixie-slim: local, pulled, or debootstrapped)
# 3. docker build, each only when its tag is missing (--force: always):
#      sotadb/postgres:17      from operator/images/postgres
#      sotadb/pgbouncer:1.24   from operator/images/pgbouncer
#      sotadb/operator:<version in pyproject.toml>  from operator/Dockerfile (repository root
#                              as context), skipped while that Dockerfile does not exist
# --force rebuilds the images (with --pull=false, --no-cache) but not the base image;
# run scripts/ensure-base-image.sh --force for that.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
force=0
targets=()
for arg in "$@"; do
    case $arg in
        --force) force=1 ;;
        postgres|pgbouncer|operator) targets+=("$arg") ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) printf 'build-images: unknown argument %s\n' "$arg" >&2; exit 2 ;;
    esac
done
# The data plane by default; the operator image only when asked (kind-up, the e2e tier).
((${#targets[@]})) || targets=(postgres pgbouncer)
wanted() { [[ " ${targets[*]} " == *" $1 "* ]]; }

say() { printf 'build-images: %s\n' "$*"; }
die() { printf 'build-images: ERROR: %s\n' "$*" >&2; exit 1; }

"$ROOT/scripts/ensure-docker.sh"
"$ROOT/scripts/ensure-base-image.sh"

operator_version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n1)

# A digest of the files an image is built from: an image whose label differs is stale (the
# Dockerfile or entrypoint changed since it was built) and is rebuilt, even though its tag exists.
source_digest() {
    (cd "$ROOT" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 \
        | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}

# build TAG CONTEXT DOCKERFILE SOURCE...
build() {
    local tag=$1 context=$2 dockerfile=$3 t log digest
    shift 3
    digest=$(source_digest "$@")
    if [ "$force" -eq 0 ] && [ "$(docker image inspect -f '{{ index .Config.Labels "sota.io/source-digest" }}' "$tag" 2>/dev/null)" = "$digest" ]; then
        say "$tag: up to date, skipped (--force to rebuild)"
        return 0
    fi
    say "$tag: building from ${dockerfile#"$ROOT"/}"
    local previous
    previous=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
    t=$(date +%s)
    log=$(mktemp /tmp/sotadb-build.XXXXXX.log)
    local -a extra=()
    [ "$force" -eq 1 ] && extra+=(--no-cache)
    # The base image exists only locally: never try to pull it.
    if ! DOCKER_BUILDKIT=0 docker build --pull=false "${extra[@]}" \
            --label "org.opencontainers.image.source=sotadb" \
            --label "sota.io/source-digest=$digest" \
            --label "org.opencontainers.image.revision=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
            -t "$tag" -f "$dockerfile" "$context" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        die "$tag: docker build failed (full log: $log)"
    fi
    rm -f "$log"
    # A rebuild leaves the previous image untagged: remove it unless something still uses it.
    if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect -f '{{.Id}}' "$tag")" ] \
            && [ "$(docker image inspect -f '{{len .RepoTags}}' "$previous" 2>/dev/null)" = 0 ]; then
        docker image rm "$previous" >/dev/null 2>&1 || true
    fi
    say "$tag: built in $(( $(date +%s) - t ))s, $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"
}

if wanted postgres; then
    build sotadb/postgres:17 "$ROOT/operator/images/postgres" \
        "$ROOT/operator/images/postgres/Dockerfile" operator/images/postgres
fi
if wanted pgbouncer; then
    build sotadb/pgbouncer:1.24 "$ROOT/operator/images/pgbouncer" \
        "$ROOT/operator/images/pgbouncer/Dockerfile" operator/images/pgbouncer
fi
if wanted operator; then
    [ -n "$operator_version" ] || die "could not read the version from pyproject.toml"
    # pip inside the build must trust the same CAs as this host (e.g. a TLS-inspecting proxy);
    # operator/Dockerfile trusts build/ca-certificates/*.crt in its build stage only.
    mkdir -p "$ROOT/build/ca-certificates"
    find "$ROOT/build/ca-certificates" -name '*.crt' -delete
    for certificate in /usr/local/share/ca-certificates/*.crt; do
        [ -e "$certificate" ] && cp "$certificate" "$ROOT/build/ca-certificates/"
    done
    build "sotadb/operator:$operator_version" "$ROOT" "$ROOT/operator/Dockerfile" \
        operator/Dockerfile operator/sotadb pyproject.toml README.md
fi
say "done"
