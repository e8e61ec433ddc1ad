"""A rendered set of configuration files with the hash that rolls the pods using them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sotadb.render.hashing import content_hash


@dataclass(frozen=True)
class RenderedFiles:
    """File name → content; `hash` covers every file, so any change rolls the workload."""

    files: Mapping[str, str] = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", MappingProxyType(dict(self.files)))

    @property
    def hash(self) -> str:
        return content_hash(dict(self.files))

    def __getitem__(self, name: str) -> str:
        return self.files[name]
