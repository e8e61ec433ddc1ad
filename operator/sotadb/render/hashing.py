"""Content hashes: canonical JSON → sha256, so equal content always gives an equal hash."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

HASH_LENGTH: Final = 16  # 64 bits: ample to detect a change, short enough to read in kubectl


def content_hash(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_LENGTH]
