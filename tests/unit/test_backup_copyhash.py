"""copyhash: per-table row counts and sha256 of a plain dump's COPY data, as it streams (the
scanner in-process, and the program as it runs next to pg_dump: `python3 -c SOURCE pass|sum`)."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys

import pytest

from sotadb.backup import copyhash


def data_for(name: bytes) -> bytes:
    """The comment pg_dump writes before a table's rows."""
    return b"--\n-- Data for Name: " + name + b"; Type: TABLE DATA; Schema: s; Owner: -\n--\n\n"


DUMP = (
    b"--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\nSET statement_timeout = 0;\n\n"
    b"CREATE FUNCTION public.f() RETURNS text LANGUAGE sql AS $$\n"
    b"COPY x FROM stdin;\nSELECT 'COPY a.b FROM stdout;'\n$$;\n\n"
    b"COMMENT ON TABLE public.t IS 'not data:\nCOPY public.fake (x) FROM stdin;\n1\n\\.\n';\n\n"
    + data_for(b"t")
    + b"COPY public.t (id, note) FROM stdin;\n1\tone\n2\t\\N\n3\tline\\nbreak\n\\.\n\n\n"
    + data_for(b"every-type")
    + b'COPY "app-data"."every-type" (id, "a b", ")x(") FROM stdin;\n\\.\n\n\n'
    + data_for(b"no_columns")
    + b"COPY public.no_columns  FROM stdin;\n\n\n\\.\n\n\n"
    + data_for(b"last")
    + b"COPY public.last (v) FROM stdin;\n\\\\.\nCOPY public.t (id) FROM stdin;\n\\.\n\n"
    + b"CREATE INDEX t_id ON public.t USING btree (id);\n\\unrestrict abc\n"
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def scan(chunks: list[bytes]) -> dict[str, tuple[int, str]]:
    return copyhash.checksum_stream(copyhash.chunk_reader(chunks))


def test_each_table_gets_its_row_count_and_the_sha256_of_its_rows():
    assert scan([DUMP]) == {
        "public.t": (3, sha(b"1\tone\n2\t\\N\n3\tline\\nbreak\n")),
        '"app-data"."every-type"': (0, sha(b"")),
        "public.no_columns": (2, sha(b"\n\n")),
        # an escaped backslash-dot row, then a row that merely looks like a COPY line
        "public.last": (2, sha(b"\\\\.\nCOPY public.t (id) FROM stdin;\n")),
    }


def test_where_the_stream_is_cut_into_chunks_does_not_matter():
    expected = scan([DUMP])
    for cut in range(1, len(DUMP)):
        assert scan([DUMP[:cut], DUMP[cut:]]) == expected, cut
    rng = random.Random(6)
    for _ in range(500):
        cuts = sorted(rng.sample(range(1, len(DUMP)), rng.randint(2, 30)))
        parts = [DUMP[a:b] for a, b in zip([0, *cuts], [*cuts, len(DUMP)], strict=True)]
        assert scan(parts) == expected, cuts


def test_a_changed_row_with_the_same_row_count_changes_the_checksum():
    changed = DUMP.replace(b"2\t\\N\n", b"2\ttwo\n")
    before, after = scan([DUMP]), scan([changed])
    assert before["public.t"][0] == after["public.t"][0] == 3
    assert before["public.t"][1] != after["public.t"][1]
    assert {k: v for k, v in before.items() if k != "public.t"} == {
        k: v for k, v in after.items() if k != "public.t"
    }


def test_reordered_rows_change_the_checksum():
    swapped = DUMP.replace(b"1\tone\n2\t\\N\n", b"2\t\\N\n1\tone\n")
    assert scan([swapped])["public.t"] != scan([DUMP])["public.t"]


def test_a_table_twice_or_a_cut_off_section_is_an_error():
    section = data_for(b"t") + b"COPY public.t (a) FROM stdin;\n1\n\\.\n"
    twice = section + section
    with pytest.raises(copyhash.DumpInvalid, match=r"public\.t appears twice"):
        scan([twice])
    with pytest.raises(copyhash.DumpInvalid, match=r"inside the rows of public\.t"):
        scan([DUMP[: DUMP.index(b"2\t\\N")]])


def run(mode: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", copyhash.source(), mode], input=data, capture_output=True
    )


def results(text: bytes) -> dict[str, tuple[int, str]]:
    lines = [json.loads(line) for line in text.decode().splitlines()]
    assert all(line["kind"] == "table" for line in lines)
    return {line["name"]: (line["rows"], line["checksum"]) for line in lines}


def test_pass_copies_the_stream_unchanged_and_reports_on_stderr():
    big = DUMP.replace(b"1\tone\n", b"".join(b"%d\trow %d\n" % (i, i) for i in range(300_000)))
    assert len(big) > 3 * copyhash.CHUNK
    done = run("pass", big)
    assert done.returncode == 0, done.stderr
    assert done.stdout == big
    expected = {name: (rows, f"sha256:{digest}") for name, (rows, digest) in scan([big]).items()}
    assert results(done.stderr) == expected
    assert expected["public.t"][0] == 300_002


def test_sum_reads_a_verification_stream_and_reports_on_stdout():
    done = run("sum", DUMP)
    assert done.returncode == 0, done.stderr
    rows = b"1\tone\n2\t\\N\n3\tline\\nbreak\n"
    assert results(done.stdout)["public.t"] == (3, "sha256:" + sha(rows))


def test_a_cut_off_stream_fails_the_program():
    done = run("pass", DUMP[: DUMP.index(b"2\t\\N")])
    assert done.returncode == 1
    assert b"sotadb: checksums: the stream ended inside the rows of public.t" in done.stderr
    assert run("nonsense", b"").returncode == 2


# ---------------------------------------------------------------- freeze: the replay's rewrite


def section(schema: bytes, table: bytes, target: bytes, rows: bytes) -> bytes:
    """A table's data as pg_dump writes it: the comment names the table, the COPY line its
    target (the partitioned root, when rows are loaded through it)."""
    comment = b"--\n-- Data for Name: " + table + b"; Type: TABLE DATA; Schema: " + schema
    return comment + b"; Owner: -\n--\n\n" + b"COPY " + target + b" (a) FROM stdin;\n" + rows


REPLAY = (
    b"--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\nCREATE TABLE public.t (a int);\n\n"
    + section(b"public", b"t", b"public.t", b"1\n2\n\\.\n")
    + b"\n\n"
    + section(b"app-data", b"every-type", b'"app-data"."every-type"', b"x\n\\.\n")
    + b"\n\n"
    + section(b"public", b'say "hi"', b'public."say ""hi"""', b"\\.\n")
    + b"\n\n"
    + section(b"public", b"p_1", b"public.p", b"7\n\\.\n")  # a partition loaded through its root
    + b"\n\nCREATE INDEX t_a ON public.t USING btree (a);\n\\unrestrict abc\n"
)


def freeze(chunks: list[bytes], *, commit_each: bool) -> bytes:
    out = bytearray()
    copyhash.freeze_stream(copyhash.chunk_reader(chunks), out.extend, commit_each=commit_each)
    return bytes(out)


def loaded(name: bytes) -> bytes:
    return b"COMMIT;\nSELECT 'sotadb-loaded " + name.hex().encode() + b"';\n"


def test_freeze_commit_loads_each_table_frozen_in_a_transaction_of_its_own():
    expected = (
        REPLAY.replace(
            b"COPY public.t (a) FROM stdin;\n1\n2\n\\.\n",
            b"BEGIN;\nTRUNCATE ONLY public.t;\nCOPY public.t (a) FROM stdin WITH (FREEZE);\n"
            b"1\n2\n\\.\n" + loaded(b"public.t"),
        )
        .replace(
            b'COPY "app-data"."every-type" (a) FROM stdin;\nx\n\\.\n',
            b'BEGIN;\nTRUNCATE ONLY "app-data"."every-type";\n'
            b'COPY "app-data"."every-type" (a) FROM stdin WITH (FREEZE);\nx\n\\.\n'
            + loaded(b'"app-data"."every-type"'),
        )
        .replace(
            b'COPY public."say ""hi""" (a) FROM stdin;\n\\.\n',
            b'BEGIN;\nTRUNCATE ONLY public."say ""hi""";\n'
            b'COPY public."say ""hi""" (a) FROM stdin WITH (FREEZE);\n\\.\n'
            + loaded(b'public."say ""hi"""'),
        )
    )
    assert b"COPY public.p (a) FROM stdin;\n7\n\\.\n\n" in expected  # the root's: untouched
    assert freeze([REPLAY], commit_each=True) == expected


def test_freeze_in_the_callers_transaction_adds_no_transaction_control():
    each = freeze([REPLAY], commit_each=True)
    for name in (b"public.t", b'"app-data"."every-type"', b'public."say ""hi"""'):
        each = each.replace(loaded(name), b"")
    assert freeze([REPLAY], commit_each=False) == each.replace(b"BEGIN;\n", b"")


def test_freeze_does_not_depend_on_where_the_stream_is_cut():
    for commit_each in (True, False):
        expected = freeze([REPLAY], commit_each=commit_each)
        for cut in range(1, len(REPLAY)):
            parts = [REPLAY[:cut], REPLAY[cut:]]
            assert freeze(parts, commit_each=commit_each) == expected, cut
        rng = random.Random(7)
        for _ in range(300):
            cuts = sorted(rng.sample(range(1, len(REPLAY)), rng.randint(2, 40)))
            parts = [REPLAY[a:b] for a, b in zip([0, *cuts], [*cuts, len(REPLAY)], strict=True)]
            assert freeze(parts, commit_each=commit_each) == expected, cuts


def test_freeze_leaves_what_is_not_a_table_section_alone():
    # The test dump of the checksums: a COPY line in a function body or a comment, and comments
    # naming schema "s" while the COPY lines name "public" (so no section is its own table's).
    assert freeze([DUMP], commit_each=True) == DUMP
    long_line = b"SELECT '" + b"x" * (3 * copyhash.MAX_CONTEXT) + b"';\n"
    assert freeze([long_line + REPLAY], commit_each=False).count(b"WITH (FREEZE)") == 3


def test_the_freeze_program_rewrites_a_big_stream_and_fails_on_a_cut_off_one():
    rows = b"".join(b"%d\n" % i for i in range(400_000))
    big = REPLAY.replace(b"1\n2\n", rows)
    assert len(big) > copyhash.CHUNK
    done = run("freeze-commit", big)
    assert done.returncode == 0, done.stderr
    assert done.stdout == freeze([big], commit_each=True)
    cut = run("freeze", big[: big.index(b"399999")])
    assert cut.returncode == 1
    assert b"sotadb: replay: the stream ended inside the rows of public.t" in cut.stderr
