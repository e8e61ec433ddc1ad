"""fanout: how a dump is cut for the parallel replay (the splitter, the COPY units, the plan of
the post-data), and the program's own command line. The replay against a real server is in
tests/dataplane/test_backup_fanout.py."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from sotadb.backup import copyhash, fanout


def section(schema: bytes, table: bytes, target: bytes, rows: bytes) -> bytes:
    return (
        b"--\n-- Data for Name: " + table + b"; Type: TABLE DATA; Schema: " + schema
        + b"; Owner: -\n--\n\nCOPY " + target + b" (a) FROM stdin;\n" + rows + b"\\.\n"
    )  # fmt: skip


def entry(name: bytes, kind: bytes, body: bytes) -> bytes:
    return (
        b"--\n-- Name: " + name + b"; Type: " + kind + b"; Schema: public; Owner: -\n--\n\n" + body
    )


ROWS = b"".join(b"%d\trow %d\n" % (i, i) for i in range(300))
PRE = (
    b"--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\nSET statement_timeout = 0;\n"
    b"SET client_encoding = 'UTF8';\nSELECT pg_catalog.set_config('search_path', '', false);\n\n"
    b"--\n-- Name: t; Type: TABLE; Schema: public; Owner: -\n--\n\nCREATE TABLE public.t (a int);\n"
    b"SET default_tablespace = '';\n\n"
)
KEY = b"ALTER TABLE ONLY public.%s\n    ADD CONSTRAINT %s %s;\n\n\n"
POST = (
    entry(b"big big_pkey", b"CONSTRAINT", KEY % (b"big", b"big_pkey", b"PRIMARY KEY (a)"))
    + entry(b"t t_pkey", b"CONSTRAINT", KEY % (b"t", b"t_pkey", b"PRIMARY KEY (a)"))
    + entry(b"big_b", b"INDEX", b"CREATE INDEX big_b ON public.big USING btree (b);\n\n\n")
    + entry(
        b"t_fk",
        b"FK CONSTRAINT",
        KEY % (b"t", b"t_fk", b"FOREIGN KEY (a) REFERENCES public.big(a)"),
    )
    + entry(b"late", b"INDEX", b"CREATE INDEX late ON public.t USING btree (a);\n\n\n")
)
DUMP = (
    PRE
    + section(b"public", b"t", b"public.t", b"1\n2\n")
    + b"\n\n"
    + section(b"public", b"big", b"public.big", ROWS)
    + b"\n\n"
    + section(b"app-data", b"every-type", b'"app-data"."every-type"', b"")
    + b"\n\n"
    + section(b"public", b"p_1", b"public.p", b"7\n")  # a partition loaded through its root
    + b"\n\n"
    + POST
    + b"\\unrestrict abc\n\n"
)


class Recorder:
    """Stands where `fanout.Replay` does, for the splitter: what it was handed, in order."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.parts: list[tuple[str, bytes]] = []

    def text(self, data: bytes | memoryview) -> None:
        if self.parts and self.parts[-1][0] == "text":
            self.parts[-1] = ("text", self.parts[-1][1] + bytes(data))
        else:
            self.parts.append(("text", bytes(data)))

    def rows_begin(self) -> None:
        self.parts.append(("begin", b""))

    def unit(self, target: bytes, header: bytes, rows: bytearray, *, hint: bool) -> None:
        self.parts.append(("unit", b"%s|%s|%d|" % (target, header, hint) + bytes(rows)))


def split(chunks: list[bytes]) -> Recorder:
    recorder = Recorder()
    copyhash.pass_stream(fanout.Splitter(recorder), copyhash.chunk_reader(chunks))  # type: ignore[arg-type]
    return recorder


@pytest.fixture
def small_units(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout, "UNIT", 1000)


def test_text_goes_on_as_it_was_and_rows_go_in_units_of_whole_lines(small_units: None):
    parts = split([DUMP]).parts
    text = b"".join(data for kind, data in parts if kind == "text")
    # Everything but the rows' sections' COPY lines, rows and end marks is passed unchanged.
    without_rows = DUMP
    for target, rows in [(b"public.t", b"1\n2\n"), (b"public.big", ROWS),
                         (b'"app-data"."every-type"', b""), (b"public.p", b"7\n")]:  # fmt: skip
        without_rows = without_rows.replace(
            b"COPY " + target + b" (a) FROM stdin;\n" + rows + b"\\.\n", b""
        )
    assert text == without_rows
    units = [data.split(b"|", 3) for kind, data in parts if kind == "unit"]
    big = [rows for target, _, _, rows in units if target == b"public.big"]
    assert b"".join(big) == ROWS
    assert len(big) == len(ROWS) // 1000 + 1
    assert all(rows.endswith(b"\n") and 1000 <= len(rows) < 1020 for rows in big[:-1])
    assert {(target, header, hint) for target, header, hint, _ in units} == {
        (b"public.t", b"COPY public.t (a) FROM stdin;", b"1"),
        (b"public.big", b"COPY public.big (a) FROM stdin;", b"1"),
        (b"public.p", b"COPY public.p (a) FROM stdin;", b"0"),  # its pages are the partition's
    }
    # Each table's rows begin after the text before it; an empty table gets no COPY at all.
    assert [kind for kind, _ in parts][:3] == ["text", "begin", "unit"]


def test_where_the_stream_is_cut_does_not_change_what_is_handed(small_units: None):
    expected = split([DUMP]).parts
    for cut in range(1, len(DUMP), 7):
        assert split([DUMP[:cut], DUMP[cut:]]).parts == expected, cut
    chance = random.Random(6)
    for _ in range(100):
        cuts = sorted(chance.sample(range(1, len(DUMP)), 12))
        chunks = [DUMP[a:b] for a, b in zip([0, *cuts], [*cuts, len(DUMP)], strict=True)]
        assert split(chunks).parts == expected


def test_every_table_is_reported_even_one_with_no_rows():
    assert split([DUMP]).rows == {
        "public.t": 0, "public.big": 0, '"app-data"."every-type"': 0, "public.p": 0,
    }  # fmt: skip


def test_a_stream_that_ends_inside_a_table_is_invalid():
    with pytest.raises(copyhash.DumpInvalid, match=r"public\.big"):
        split([DUMP[: DUMP.index(b"7\trow 7")]])


def test_a_copy_unit_announces_its_table_and_then_sets_the_hint_bits_of_its_pages():
    target = b'public."it\'s ""x"""'
    sql = b"".join(
        fanout.copy_unit(target, b"COPY " + target + b" (a) FROM stdin;", b"1\n", hint=True)
    )
    assert sql.startswith(b"SELECT 'sotadb-copy " + target.hex().encode() + b" ' || ")
    assert b'pg_catalog.pg_relation_size(\'public."it\'\'s ""x"""\')' in sql
    assert (
        b"FROM stdin;\n1\n\\.\nSELECT pg_catalog.count(*) FROM ONLY " + target + b" WHERE ctid >= "
        in sql
    )
    plain = b"".join(
        fanout.copy_unit(b"public.p", b"COPY public.p (a) FROM stdin;", b"7\n", hint=False)
    )
    assert (
        plain
        == b"SELECT 'sotadb-copy "
        + b"public.p".hex().encode()
        + b"';\nCOPY public.p (a) FROM stdin;\n7\n\\.\n"
    )


def test_the_post_data_plan_builds_indexes_and_keys_in_parallel_largest_table_first():
    tail = (
        b"\n\nSELECT pg_catalog.setval('public.s', 3, true);\n\n" + POST + b"\\unrestrict abc\n\n"
    )
    plan = fanout.plan(tail, {b"public.t": 10, b"public.big": 5000})
    assert plan.before == b"\n\nSELECT pg_catalog.setval('public.s', 3, true);\n\n"
    assert [[e.text.split(b"\n")[1] for e in group] for group in plan.parallel] == [
        [b"-- Name: big big_pkey; Type: CONSTRAINT; Schema: public; Owner: -",
         b"-- Name: big_b; Type: INDEX; Schema: public; Owner: -"],
        [b"-- Name: t t_pkey; Type: CONSTRAINT; Schema: public; Owner: -"],
    ]  # fmt: skip
    # From the first entry that is not an index or key on, the dump's own order, in one session.
    assert plan.after.startswith(b"--\n-- Name: t_fk; Type: FK CONSTRAINT;")
    assert plan.after.endswith(b"late ON public.t USING btree (a);\n\n\n\\unrestrict abc\n\n")


def test_an_index_whose_entry_sets_session_state_stays_in_order():
    tail = (
        entry(b"a", b"INDEX", b"CREATE INDEX a ON public.t USING btree (a);\n\n")
        + b"SET default_tablespace = fast;\n\n"
        + entry(b"b", b"INDEX", b"CREATE INDEX b ON public.t USING btree (b);\n")
    )  # fmt: skip
    plan = fanout.plan(tail, {})
    assert plan.parallel == []  # b after a's SET: in a's session
    assert plan.before + plan.after == tail
    later = fanout.plan(
        entry(b"c", b"INDEX", b"CREATE INDEX c ON public.t USING btree (c);\n") + tail, {}
    )
    assert [[e.text for e in group] for group in later.parallel] == [[later.parallel[0][0].text]]
    assert later.after == tail


def test_a_dump_without_post_data_has_nothing_to_plan():
    assert fanout.plan(b"\n\n", {}) == fanout.PostData(before=b"\n\n")


def test_sessions_set_their_role_quoted_and_share_the_index_builds_memory():
    sql = fanout.settings_sql(3, 'app_a"b').decode()
    assert 'SET ROLE "app_a""b";' in sql
    assert "/ 3))::text || 'kB'" in sql
    assert "ROLE" not in fanout.settings_sql(2, None).decode()


def test_session_count_is_the_cores_there_within_bounds(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(fanout.os, "sched_getaffinity", lambda _: {0})
    assert fanout.session_count() == 2
    monkeypatch.setattr(fanout.os, "sched_getaffinity", lambda _: set(range(64)))
    assert fanout.session_count() == fanout.MAX_SESSIONS
    assert fanout.session_count("3") == 3


def test_result_lines_read_back():
    lines = fanout.result_lines({"public.t": 2, '"a-b"."c"': 0})
    assert fanout.parse_output(["psql: noise", *lines.splitlines()]) == {
        "public.t": 2,
        '"a-b"."c"': 0,
    }
    assert [json.loads(line)["kind"] for line in lines.splitlines()] == ["loaded", "loaded"]


def test_the_program_runs_from_its_text_alone_with_copyhash_beside_it(tmp_path):
    """As next to PostgreSQL: `python3 -c SOURCE`, sotadb not importable, copyhash's text in the
    environment. An empty stream needs no psql: the program starts, reads and ends."""
    env = {"SOTADB_COPYHASH": copyhash.source(), "PATH": f"{tmp_path}:/usr/bin:/bin"}
    (tmp_path / "psql").write_text("#!/bin/sh\ncat >/dev/null\n")
    (tmp_path / "psql").chmod(0o755)
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", fanout.source(), "2"],
        input=b"", capture_output=True, env=env, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b""
