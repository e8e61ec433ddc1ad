"""The scheduled backup's command. Pure.

A deliberately small runner until the backup issue replaces it with the full one (drills,
DatabaseBackup objects): pg_dump's custom format is not used because the seed promises gzip;
the dump is written under a temporary name, fsynced, checksummed, then renamed, so a killed
run never leaves a file that looks like a backup. Retention never removes the newest backup.
"""

from __future__ import annotations

from typing import Final

from sotadb import names
from sotadb.spec import ManagedDatabase

BACKUP_SUFFIX: Final = ".sql.gz"

_SCRIPT: Final = r"""set -eu
umask 077
dir="$SOTADB_BACKUP_DIR"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
final="$dir/$PGDATABASE-$stamp{suffix}"
tmp="$dir/.$PGDATABASE-$stamp{suffix}.partial"
trap 'rm -f "$tmp"' EXIT
pg_dump --no-password --format=plain | pigz -c > "$tmp"
sync "$tmp"
sha256sum "$tmp" | cut -d' ' -f1 > "$final.sha256"
mv "$tmp" "$final"
sync "$dir"
echo "backup written: $final ($(stat -c %s "$final") bytes)"
# find's -mtime +N means "more than N+1 whole days old".
newest="$(ls -1t "$dir"/*{suffix} | head -n 1)"
find "$dir" -maxdepth 1 -name '*{suffix}' -mtime "+$((SOTADB_RETENTION_DAYS - 1))" \
  ! -path "$newest" -print -exec rm -f {{}} {{}}.sha256 \;
"""


def backup_script(db: ManagedDatabase) -> str:
    del db  # one script for every database; its inputs come from the environment
    return _SCRIPT.format(suffix=BACKUP_SUFFIX)


def backup_environment(db: ManagedDatabase) -> dict[str, str]:
    return {
        "SOTADB_BACKUP_DIR": names.BACKUP_DIR,
        "SOTADB_RETENTION_DAYS": str(db.spec.backups.retention_days),
    }
