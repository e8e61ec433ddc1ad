"""Project names → database slugs: one pure, documented, injective rule.

The seed's API addresses a database by its *project* (`/v1/projects/{project}/database`, with
projects like `550e8400-e29b-41d4-a716-446655440000`); everything below the API is named by a
*slug*: a DNS label of at most 40 characters that starts with a letter (`names.SLUG_PATTERN`),
from which `sota-db-{slug}`, `app_{slug}` and the rest derive.

The rule (`slug_for`), in order:

1. **Already a slug.** A name that is a valid slug and does not start with `p-` is its own slug:
   `my-app` → `my-app`.
2. **A slug once prefixed.** A name of lowercase letters, digits and single hyphens that starts
   with a digit, ends with a letter or digit and has at most 38 characters gets `p-` in front:
   `550e8400-e29b-41d4-a716-446655440000` → `p-550e8400-e29b-41d4-a716-446655440000`.
   So a lowercase UUID — the seed's project id — always keeps its whole id: with `p-` when it
   starts with a digit, as it is when it starts with a-f (then it is a slug already, rule 1).
3. **Anything else** (uppercase, underscores, dots, longer than fits, a valid slug that starts
   with `p-`, any other character) → `p-{core}--{hash}`: `core` is the name lowercased, every
   run of characters outside `[a-z0-9]` turned into one `-`, trimmed of hyphens and cut to 26
   characters; `hash` is the first 10 characters of the lowercase base32 SHA-256 of the name's
   UTF-8 bytes (50 bits). `My_App` → `p-my-app--…`, at most 40 characters.

Why it is safe to share one slug namespace between all projects (a token for one project must
never reach another's database): the three kinds of result never meet — (1) never starts with
`p-`, (2) starts with `p-` and contains no `--`, (3) starts with `p-` and contains `--` — and
within a kind the rule is injective: (1) is the identity, (2) a fixed prefix, and (3) differs
unless two names share the 26-character core *and* a 50-bit hash. This is also why a valid slug
starting with `p-` is not its own slug: `p-` names are reserved for mapped ones, otherwise a
project called `p-550e8400-…` would share the database of project `550e8400-…`.

Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import re
from enum import StrEnum
from typing import Final

from sotadb import names

MAPPED_PREFIX: Final = "p-"
HASH_SEPARATOR: Final = "--"
HASH_LENGTH: Final = 10  # base32 characters: 50 bits
CORE_MAX_LENGTH: Final = (
    names.SLUG_MAX_LENGTH - len(MAPPED_PREFIX) - len(HASH_SEPARATOR) - HASH_LENGTH
)
# Kind 2: becomes a valid slug (without a `--`) by putting `p-` in front.
_PREFIXABLE_RE: Final = re.compile(r"[0-9][a-z0-9]*(?:-[a-z0-9]+)*")
_NOT_ALPHANUMERIC_RE: Final = re.compile(r"[^a-z0-9]+")

# What the API accepts as a project name (the slug rule itself takes any string): 1-253
# URL-unreserved characters, so a name reads the same in every URL and needs no escaping, and
# not only dots (`.` and `..` are path segments clients rewrite).
PROJECT_MAX_LENGTH: Final = 253
PROJECT_PATTERN: Final = r"^[A-Za-z0-9._~-]*[A-Za-z0-9_~-][A-Za-z0-9._~-]*$"
_PROJECT_RE: Final = re.compile(PROJECT_PATTERN)


class SlugKind(StrEnum):
    """Which branch of the rule produced a slug (see the module docstring)."""

    IDENTITY = "identity"
    PREFIXED = "prefixed"
    HASHED = "hashed"


def is_slug(text: str) -> bool:
    return len(text) <= names.SLUG_MAX_LENGTH and names.SLUG_RE.fullmatch(text) is not None


def is_valid_project(name: str) -> bool:
    return len(name) <= PROJECT_MAX_LENGTH and _PROJECT_RE.fullmatch(name) is not None


def kind_of(project: str) -> SlugKind:
    if is_slug(project) and not project.startswith(MAPPED_PREFIX):
        return SlugKind.IDENTITY
    if (
        len(MAPPED_PREFIX) + len(project) <= names.SLUG_MAX_LENGTH
        and _PREFIXABLE_RE.fullmatch(project) is not None
    ):
        return SlugKind.PREFIXED
    return SlugKind.HASHED


def slug_for(project: str) -> str:
    """The slug of `project`'s database. Total over all strings, deterministic, injective
    (up to a 50-bit hash collision within rule 3), always a valid slug."""
    kind = kind_of(project)
    if kind is SlugKind.IDENTITY:
        return project
    if kind is SlugKind.PREFIXED:
        return MAPPED_PREFIX + project
    core = _NOT_ALPHANUMERIC_RE.sub("-", project.lower()).strip("-")
    core = core[:CORE_MAX_LENGTH].rstrip("-")
    return f"{MAPPED_PREFIX}{core}{HASH_SEPARATOR}{_hash(project)}"


def _hash(project: str) -> str:
    # surrogatepass: a str from anywhere (even lone surrogates) still has bytes to hash.
    digest = hashlib.sha256(project.encode("utf-8", "surrogatepass")).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:HASH_LENGTH]
