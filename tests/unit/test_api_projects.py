"""Project name → slug: always a valid slug, deterministic, injective, identity on slugs."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sotadb import names
from sotadb.api import projects
from sotadb.api.projects import SlugKind, kind_of, slug_for
from sotadb.docker.runtime import minimal_document
from sotadb.spec import parse_database

SEED_PROJECT = "550e8400-e29b-41d4-a716-446655440000"

# Valid slugs (names.SLUG_PATTERN, at most 40 characters).
slugs = st.from_regex(r"\A[a-z]([-a-z0-9]{0,38}[a-z0-9])?\Z")
# Anything at all: the rule is total, though the API accepts fewer names.
any_text = st.text(max_size=300)
# What the API accepts as a project name.
api_projects = st.from_regex(projects.PROJECT_PATTERN.replace("^", r"\A").replace("$", r"\Z"))
api_projects = api_projects.filter(lambda p: len(p) <= projects.PROJECT_MAX_LENGTH)
near_misses = st.one_of(
    slugs,
    slugs.map(str.upper),
    slugs.map(lambda s: "p-" + s),
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    any_text,
)


def assert_valid_slug(slug: str) -> None:
    assert len(slug) <= names.SLUG_MAX_LENGTH
    assert names.SLUG_RE.fullmatch(slug)
    parse_database(minimal_document(slug))  # the spec's own validation accepts it


@pytest.mark.parametrize(
    ("project", "slug"),
    [
        pytest.param("my-app", "my-app", id="already-a-slug"),
        pytest.param("a", "a", id="one-letter"),
        pytest.param("a" * 40, "a" * 40, id="longest-slug"),
        pytest.param(SEED_PROJECT, "p-" + SEED_PROJECT, id="seed-uuid"),
        pytest.param(
            "e3e70682-c209-4cac-629f-6fbed82c07cd",
            "e3e70682-c209-4cac-629f-6fbed82c07cd",
            id="uuid-starting-with-a-letter",
        ),
        pytest.param("1", "p-1", id="digit"),
        pytest.param("2024-shop", "p-2024-shop", id="starts-with-digit"),
    ],
)
def test_documented_examples(project, slug):
    assert slug_for(project) == slug


@pytest.mark.parametrize(
    ("project", "core"),
    [
        pytest.param("My_App", "my-app", id="uppercase-underscore"),
        pytest.param(SEED_PROJECT.upper(), SEED_PROJECT[:26], id="uppercase-uuid"),
        pytest.param("a" * 41, "a" * 26, id="too-long"),
        pytest.param("p-my-app", "p-my-app", id="reserved-prefix"),
        pytest.param("my-app-", "my-app", id="trailing-hyphen"),
        pytest.param("shop.example", "shop-example", id="dot"),
        pytest.param("__", "", id="nothing-left"),
        pytest.param("", "", id="empty"),
        pytest.param("Ünïcödé", "n-c-d", id="unicode"),
    ],
)
def test_other_names_are_hashed(project, core):
    slug = slug_for(project)
    assert kind_of(project) is SlugKind.HASHED
    assert re.fullmatch(rf"p-{re.escape(core)}--[a-z2-7]{{10}}", slug), slug
    assert_valid_slug(slug)


def test_the_seeds_project_id_reads_in_every_container_name():
    assert names.postgres_name(slug_for(SEED_PROJECT)) == f"sota-db-p-{SEED_PROJECT}"


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_every_name_gives_a_valid_slug(project):
    assert_valid_slug(slug_for(project))


@settings(max_examples=200, deadline=None)
@given(any_text)
def test_deterministic(project):
    assert slug_for(project) == slug_for(str(project))  # equal strings, equal slugs
    assert slug_for(project) == projects.slug_for(project)


@settings(max_examples=300, deadline=None)
@given(slugs.filter(lambda s: not s.startswith("p-")))
def test_a_slug_is_its_own_slug(slug):
    assert slug_for(slug) == slug


@settings(max_examples=300, deadline=None)
@given(near_misses, near_misses)
def test_distinct_names_get_distinct_slugs(first, second):
    if first != second:
        assert slug_for(first) != slug_for(second)


@settings(max_examples=200, deadline=None)
@given(near_misses)
def test_the_three_kinds_never_meet(project):
    """The reason the rule is injective: each kind's slugs have a shape no other kind's have."""
    slug = slug_for(project)
    kind = kind_of(project)
    if kind is SlugKind.IDENTITY:
        assert not slug.startswith("p-")
    elif kind is SlugKind.PREFIXED:
        assert slug.startswith("p-")
        assert "--" not in slug
    else:
        assert slug.startswith("p-")
        assert "--" in slug


@settings(max_examples=200, deadline=None)
@given(st.uuids())
def test_lowercase_uuids_keep_their_whole_id(uuid):
    """One starting with a letter (a-f) is a slug already; one starting with a digit gets p-."""
    expected = str(uuid) if str(uuid)[0].isalpha() else f"p-{uuid}"
    assert slug_for(str(uuid)) == expected


@pytest.mark.parametrize(
    "project",
    [
        pytest.param(SEED_PROJECT, id="uuid"),
        pytest.param("My_App.v2~x", id="unreserved"),
        pytest.param("a" * 253, id="longest"),
    ],
)
def test_api_accepts_these_names(project):
    assert projects.is_valid_project(project)


@pytest.mark.parametrize(
    "project",
    [
        pytest.param("", id="empty"),
        pytest.param(".", id="dot"),
        pytest.param("..", id="dot-dot"),
        pytest.param("a/b", id="slash"),
        pytest.param("a b", id="space"),
        pytest.param("é", id="non-ascii"),
        pytest.param("a" * 254, id="too-long"),
    ],
)
def test_api_refuses_these_names(project):
    assert not projects.is_valid_project(project)


@settings(max_examples=200, deadline=None)
@given(api_projects)
def test_every_api_name_gives_a_valid_slug(project):
    assert_valid_slug(slug_for(project))
