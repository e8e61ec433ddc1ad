#!/usr/bin/env bash
# Debian packages the project needs on a fresh machine: kubectl, debootstrap, Node.js and npm,
# and a running Docker engine.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
need=()
command -v kubectl >/dev/null 2>&1 || need+=(kubectl)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
# node-postgres (npm's pg) is the prepared-statements client of tests/dataplane/test_migrations.
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Debian itself ships kubectl as kubernetes-client; an apt source of Kubernetes' own (as on
  # sotadb's dev machines) calls it kubectl.
  if [[ " ${need[*]} " == *" kubectl "* ]] && ! apt-cache show kubectl >/dev/null 2>&1; then
    need=("${need[@]/#kubectl/kubernetes-client}")
  fi
  echo "sotadb: installing ${need[*]} from Debian"
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
bash "$here/ensure-docker.sh"
