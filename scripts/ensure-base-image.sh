#!/usr/bin/env bash
# Make sure the base image debian:trixie-slim exists in the local Docker engine.
#
# Order: present locally -> done; `docker pull` (bounded by $SOTADB_PULL_TIMEOUT s) -> done;
# otherwise build it here: debootstrap --variant=minbase from the Debian mirror the host's
# apt already uses, slim it, point its apt sources at that mirror (trixie, trixie-updates,
# trixie-security) and `docker import` it.
#
# Usage: ensure-base-image.sh [--force]     (--force: rebuild even if the tag exists)
# Env:   SOTADB_BASE_IMAGE (debian:trixie-slim), SOTADB_DEBIAN_SUITE (trixie),
#        SOTADB_DEBIAN_MIRROR / SOTADB_DEBIAN_SECURITY_MIRROR (override the detected mirrors),
#        SOTADB_PULL_TIMEOUT (20)
set -euo pipefail

IMAGE=${SOTADB_BASE_IMAGE:-debian:trixie-slim}
SUITE=${SOTADB_DEBIAN_SUITE:-trixie}
PULL_TIMEOUT=${SOTADB_PULL_TIMEOUT:-20}
FALLBACK_MIRROR=http://deb.debian.org/debian
FALLBACK_SECURITY_MIRROR=http://deb.debian.org/debian-security

force=0
for arg in "$@"; do
    case $arg in
        --force) force=1 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) printf 'ensure-base-image: unknown argument %s\n' "$arg" >&2; exit 2 ;;
    esac
done

say() { printf 'ensure-base-image: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

docker info >/dev/null 2>&1 || die "no Docker engine answers (run scripts/ensure-docker.sh first)"

if [ "$force" -eq 0 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "$IMAGE is present; nothing to do"
    exit 0
fi

if [ "$force" -eq 0 ]; then
    say "trying docker pull $IMAGE (timeout ${PULL_TIMEOUT}s)"
    if timeout "$PULL_TIMEOUT" docker pull -q "$IMAGE" >/dev/null 2>&1; then
        say "pulled $IMAGE"
        exit 0
    fi
    say "pull failed; building $IMAGE with debootstrap"
fi

[ "$(id -u)" -eq 0 ] || die "building $IMAGE with debootstrap needs root"

# --- Which mirror does the host's apt use? -----------------------------------------------
# Prints every archive URI apt is configured with (deb822 *.sources and one-line *.list),
# one per line, in apt's order. Only deb (binary) entries; deb-src is ignored.
host_apt_uris() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        # deb [options] URI suite components...
        awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ } print $i }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # Stanzas: keep URIs of stanzas whose Types include "deb" and that are not Enabled: no.
        awk '
            function flush() { if (types ~ /(^| )deb( |$)/ && enabled != "no") print uris; types = ""; uris = ""; enabled = "" }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            tolower($1) == "types:"   { $1 = ""; types = $0; sub(/^ +/, "", types); next }
            tolower($1) == "uris:"    { $1 = ""; uris = $0; sub(/^ +/, "", uris); next }
            tolower($1) == "enabled:" { enabled = tolower($2); next }
            END { flush() }
        ' "$f" | tr ' ' '\n'
    done
}

# The main archive: first URI whose path ends in /debian. The security archive: first URI
# ending in /debian-security, else derived from the main one when it ends in /debian.
detect_mirrors() {
    local uris
    uris=$(host_apt_uris | sed 's:/*$::' | grep -E '^(https?|file)://' || true)
    MIRROR=${SOTADB_DEBIAN_MIRROR:-$(printf '%s\n' "$uris" | grep -E '/debian$' | head -n1 || true)}
    SECURITY_MIRROR=${SOTADB_DEBIAN_SECURITY_MIRROR:-$(printf '%s\n' "$uris" | grep -E '/debian-security$' | head -n1 || true)}
    if [ -z "$MIRROR" ]; then
        say "no Debian mirror found in the host's apt sources; using $FALLBACK_MIRROR"
        MIRROR=$FALLBACK_MIRROR
    fi
    if [ -z "$SECURITY_MIRROR" ]; then
        SECURITY_MIRROR=${MIRROR}-security
        case $MIRROR in */debian) ;; *) SECURITY_MIRROR=$FALLBACK_SECURITY_MIRROR ;; esac
    fi
}
detect_mirrors
say "mirror: $MIRROR   security: $SECURITY_MIRROR"

if ! command -v debootstrap >/dev/null 2>&1; then
    say "debootstrap not found: installing it"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends debootstrap >/dev/null
fi

# --- Build the root filesystem -----------------------------------------------------------
WORK=$(mktemp -d /var/tmp/sotadb-rootfs.XXXXXX)
ROOTFS=$WORK/rootfs

# Unmount whatever debootstrap left mounted (proc, sys, dev binds on an interrupted run)
# before deleting: rm must never descend into a host filesystem.
cleanup() {
    if [ -d "$ROOTFS" ]; then
        awk -v root="$ROOTFS" 'index($2, root) == 1 { print $2 }' /proc/self/mounts | sort -r \
            | while IFS= read -r m; do umount -l "$m" 2>/dev/null || true; done
        if awk -v root="$ROOTFS" 'index($2, root) == 1 { found = 1 } END { exit !found }' /proc/self/mounts; then
            say "WARNING: mounts remain under $ROOTFS; leaving $WORK in place"
            return
        fi
    fi
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

started=$(date +%s)
say "debootstrap --variant=minbase $SUITE (takes ~20-30 s)"
if ! debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
    tail -n 30 "$WORK/debootstrap.log" >&2
    [ -f "$ROOTFS/debootstrap/debootstrap.log" ] && tail -n 30 "$ROOTFS/debootstrap/debootstrap.log" >&2
    die "debootstrap failed (mirror $MIRROR)"
fi

# apt sources inside the image: the same mirrors the host uses, deb822 format like Debian's
# own images. No Signed-By: the image's debian-archive-keyring (in /etc/apt/trusted.gpg.d
# and /usr/share/keyrings) is trusted by default.
rm -f "$ROOTFS/etc/apt/sources.list"
cat >"$ROOTFS/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
[ -f "$ROOTFS/usr/share/keyrings/debian-archive-keyring.gpg" ] \
    || sed -i '/^Signed-By:/d' "$ROOTFS/etc/apt/sources.list.d/debian.sources"

# Container habits of Debian's official images: no services started by maintainer scripts,
# no .deb cache, no recommends, and the "slim" dpkg excludes (docs, man pages, translations).
cat >"$ROOTFS/usr/sbin/policy-rc.d" <<'EOF'
#!/bin/sh
# Installed by sotadb's ensure-base-image.sh: never start services during image builds.
exit 101
EOF
chmod 0755 "$ROOTFS/usr/sbin/policy-rc.d"
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-no-recommends" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
# As in Debian's -slim images: drop documentation and translations, keep copyright files.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
# Apply the same excludes to what debootstrap already installed.
find "$ROOTFS/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/lintian/* 2>/dev/null || true
find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true

# Host-specific and cache files that must not be baked into an image.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/archives/partial/* \
       "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/debootstrap \
       "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/* "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/*
mkdir -p "$ROOTFS/var/lib/apt/lists/partial"
: >"$ROOTFS/etc/resolv.conf"
: >"$ROOTFS/etc/hostname"
: >"$ROOTFS/etc/machine-id" 2>/dev/null || true

say "importing into docker as $IMAGE"
tar --numeric-owner -C "$ROOTFS" -c . \
    | docker import -c 'CMD ["bash"]' -m "debootstrap --variant=minbase $SUITE $MIRROR (sotadb)" - "$IMAGE" >/dev/null
say "built $IMAGE in $(( $(date +%s) - started ))s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
