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
