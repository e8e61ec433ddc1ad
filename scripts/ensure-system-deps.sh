#!/usr/bin/env bash
# Debian packages the project needs on a fresh machine: kubectl and a running Docker engine.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
need=()
command -v kubectl >/dev/null 2>&1 || need+=(kubectl)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if ((${#need[@]})); then
  echo "sotadb: installing ${need[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
bash "$here/ensure-docker.sh"
