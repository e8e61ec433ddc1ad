"""Kubernetes resource quantities ("512Mi", "1Gi", "500m") as exact numbers. Pure.

The core may not import the kubernetes client (import-linter), and we only need the
canonical suffixes the CRD schema admits.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Final

_SUFFIX_MULTIPLIERS: Final[dict[str, Decimal]] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
}
# The same pattern goes into the CRD schema, so both sides accept exactly the same strings.
QUANTITY_PATTERN: Final = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$"
_QUANTITY_RE: Final = re.compile(QUANTITY_PATTERN)


def parse_quantity(text: str) -> Decimal:
    """Return the quantity's value in base units (bytes, or cores); ValueError if malformed."""
    match = _QUANTITY_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a quantity such as 512Mi, 10Gi or 500m")
    suffix = match.group(2) or ""
    number = text[: len(text) - len(suffix)]
    return Decimal(number) * _SUFFIX_MULTIPLIERS[suffix]


def to_mebibytes(text: str) -> int:
    """Whole MiB, rounded down: what PostgreSQL memory settings are written in."""
    return int(parse_quantity(text) / _SUFFIX_MULTIPLIERS["Mi"])
