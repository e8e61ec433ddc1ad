#!/usr/bin/env bash
# Make sure a Docker engine answers on this host.
#
# Idempotent: a no-op when `docker info` already works. Otherwise installs Debian's
# docker.io if dockerd is missing, starts dockerd detached (nohup + setsid, logging to
# $SOTADB_DOCKERD_LOG) and waits up to $SOTADB_DOCKERD_WAIT seconds for it to answer.
# Exits non-zero with a message saying what to look at when the engine does not come up.
set -euo pipefail

LOG=${SOTADB_DOCKERD_LOG:-/var/log/sotadb-dockerd.log}
WAIT=${SOTADB_DOCKERD_WAIT:-60}

say() { printf 'ensure-docker: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

engine_answers() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && engine_answers; then
    say "engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')); nothing to do"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "no Docker engine answers and starting one needs root (run as root or start dockerd yourself)"

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    say "dockerd/docker not found: installing Debian's docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends docker.io >/dev/null
    command -v dockerd >/dev/null 2>&1 || die "docker.io installed but dockerd is still not on PATH"
fi

# A dockerd may already be starting (e.g. a concurrent run of this script): give it the
# same bounded wait instead of starting a second one, which would fail on the pid file.
if ! pgrep -x dockerd >/dev/null 2>&1; then
    say "starting dockerd (log: $LOG)"
    mkdir -p "$(dirname "$LOG")"
    # setsid: own session, so it survives the caller's shell and job control;
    # stdin from /dev/null so it never holds the caller's terminal.
    nohup setsid dockerd >>"$LOG" 2>&1 </dev/null &
else
    say "dockerd is running but not answering yet; waiting"
fi

deadline=$(( $(date +%s) + WAIT ))
until engine_answers; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        say "last lines of $LOG:"
        tail -n 20 "$LOG" >&2 2>/dev/null || true
        die "Docker engine did not answer within ${WAIT}s (see $LOG)"
    fi
    sleep 0.5
done
say "engine answers ($(docker version --format '{{.Server.Version}}'))"
