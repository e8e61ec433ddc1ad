"""Row counts and sha256 of each table's COPY data in a plain pg_dump stream.

A standalone program (standard library only): it runs wherever pg_dump and psql run, as
`python3 -c "$SOURCE" pass|sum`, with this file's own text as SOURCE (`source()`).

    pass  copies stdin to stdout unchanged (pg_dump | copyhash pass | compressor) and writes
          the results to stderr at the end;
    sum   reads stdin (psql's `COPY ... TO STDOUT` of a restored database, framed the same way,
          see `checksums`) and writes the results to stdout;
    freeze, freeze-commit
          copy stdin (a dump being replayed) to stdout, each table's rows loaded with FREEZE
          (`Freezer`), in the caller's transaction or (freeze-commit) one of their own.

A result is one JSON line per table: `{"kind": "table", "name": "public.t", "rows": N,
"checksum": "sha256:HEX"}`. A table's section is pg_dump's comment for it (`-- Data for Name:
...; Type: TABLE DATA; ...`, `--`, an empty line), the line `COPY <schema>.<table>
(<columns>) FROM stdin;`, its rows (one line each: COPY text escapes newlines) and `\\.`.
The name is pg_dump's, quoted like `format('%I.%I')`. The checksum is the sha256 of the rows'
bytes exactly as written, so it depends on row order: a table created and filled by one COPY
(every restore here) is read back in the same order (sequential scan, synchronize_seqscans off).

A COPY line without that comment just before it (text in a function body or a COMMENT, say)
is not a section: nothing but a deliberate copy of pg_dump's comment lines can start one. A
table that appears twice, or a stream that ends inside a section, is an error (exit 1).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterable

CHUNK = 1 << 20
PIPE_SIZE = 1 << 20  # fewer, larger reads and writes than the default 64 KiB pipe
MAX_HEADER = 16 << 20  # a COPY line with 1,600 quoted 63-byte column names is about 110 KB
# pg_dump writes every table's rows as a TOC comment, `--`, an empty line, the COPY line:
#   -- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: -
#   --
#   (empty)
#   COPY public.t (id, note) FROM stdin;
_MARK = b"; Type: TABLE DATA; Schema: "
_BEFORE_COPY = b"\n--\n\n"
_END = b"\n\\.\n"
IDENT = rb'(?:[a-z_][a-z0-9_]*|"(?:[^"\n]|"")+")'
_HEADER = re.compile(rb"COPY (" + IDENT + rb"\." + IDENT + rb")(?: \(.*\))? +FROM stdin;\Z")
_TARGET = re.compile(rb"(" + IDENT + rb")\.(" + IDENT + rb")\Z")
_FROM_STDIN = b"FROM stdin;"
MAX_CONTEXT = 4096  # of a line before a mark, kept to check it is pg_dump's whole comment line
LOADED = b"sotadb-loaded"  # Freezer(commit_each=True)'s output: a table's load is committed


class DumpInvalid(Exception):
    """The stream cannot be read as a dump (a table twice, a section cut off)."""


class Sections:
    """`scan` it the stream in buffers of any size; `finish` then gives name -> (rows, sha256).

    The caller owns the buffer: `scan(buf, end)` looks at `buf[:end]` and returns where the
    bytes it could not decide about yet start (at most a few, or a partial COPY line); the
    caller moves them to the front and reads the next bytes after them (see `main`)."""

    def __init__(self) -> None:
        self.tables: dict[str, tuple[int, str]] = {}
        self._pos = 1  # where scanning resumes in the buffer (index 0: the byte before it)
        self._name: str | None = None
        self._digest = hashlib.sha256()
        self._rows = 0

    def scan(self, buf: bytearray, end: int) -> int:
        pos = self._pos
        while True:
            if self._name is None:
                found = buf.find(_MARK, pos - 1, end)
                if found < 0:
                    return self._carry(buf, max(pos, end - len(_MARK) + 1))
                comment_end = buf.find(b"\n", found, end)
                if comment_end < 0 or end < comment_end + len(_BEFORE_COPY):
                    return self._carry(buf, self._bounded(found, end))
                if not buf.startswith(_BEFORE_COPY, comment_end):
                    pos = found + len(_MARK)  # not pg_dump's comment: search on
                    continue
                copy_start = comment_end + len(_BEFORE_COPY)
                line_end = buf.find(b"\n", copy_start, end)
                if line_end < 0:
                    return self._carry(buf, self._bounded(found, end))
                match = _HEADER.match(buf, copy_start, line_end)
                if match is None:
                    pos = found + len(_MARK)
                    continue
                self._header(buf, found, copy_start, line_end, match.group(1))
                self._open(match.group(1).decode("utf-8", errors="surrogateescape"))
                pos = line_end + 1
            else:
                stop = buf.find(_END, pos - 1, end)
                if stop < 0:
                    safe = max(pos, end - len(_END) + 1)
                    self._hash(buf, pos, safe)
                    return self._carry(buf, safe)
                self._hash(buf, pos, stop + 1)
                self._close()
                pos = stop + len(_END)
                self._ended(buf, pos)

    def finish(self) -> dict[str, tuple[int, str]]:
        if self._name is not None:
            raise DumpInvalid(f"the stream ended inside the rows of {self._name}")
        return self.tables

    @staticmethod
    def _bounded(found: int, end: int) -> int:
        """Where to resume when a data header is not complete yet: at its comment (its first
        byte is carried: `_carry`), unless it has grown beyond any real one."""
        if end - found > MAX_HEADER:
            raise DumpInvalid("a table's COPY line is longer than 16 MiB")
        return found + 1

    def _carry(self, buf: bytearray, pos: int) -> int:
        """Scanning resumes at `pos`; the byte before it is kept too (a newline may start a
        match), so the caller keeps `buf[pos - 1:]`."""
        self._pos = 1
        return pos - 1

    def _header(
        self, buf: bytearray, found: int, copy_start: int, line_end: int, target: bytes
    ) -> None:
        """A section starts: its comment's mark at `found`, its COPY line `buf[copy_start:
        line_end]` naming `target`. (A hook: `Freezer` rewrites the line.)"""

    def _ended(self, buf: bytearray, after: int) -> None:
        """A section's `\\.` line ended just before `after`. (A hook, as `_header`.)"""

    def _hash(self, buf: bytearray, start: int, end: int) -> None:
        if end > start:
            self._digest.update(memoryview(buf)[start:end])
            self._rows += buf.count(b"\n", start, end)

    def _open(self, name: str) -> None:
        if name in self.tables:
            raise DumpInvalid(f"table {name} appears twice")
        self._name, self._digest, self._rows = name, hashlib.sha256(), 0

    def _close(self) -> None:
        self.tables[self._name or ""] = (self._rows, self._digest.hexdigest())
        self._name = None


class Passing(Sections):
    """A `Sections` that passes the stream on in order through `_emit` (to `write`), keeping
    the line it is in while outside a section (it may be a comment to check). Subclasses
    rewrite or route parts of it through the hooks."""

    def __init__(self, write: Callable[[bytes | memoryview], object]) -> None:
        super().__init__()
        self._write = write
        self._emitted = 1  # buf[:_emitted] has been passed on (index 0: the carried byte)

    def _carry(self, buf: bytearray, pos: int) -> int:
        self._emit(buf, pos)
        start = pos - 1
        if self._name is None:  # keep the line `pos` is in: it may be a comment to check
            line = buf.rfind(b"\n", max(0, pos - 1 - MAX_CONTEXT), pos - 1)
            if line >= 0:
                start = line
        self._pos = pos - start
        self._emitted -= start
        return start

    def _hash(self, buf: bytearray, start: int, end: int) -> None:
        """Nothing to hash here: the rows only pass."""

    def flush(self, buf: bytearray, end: int) -> None:
        """The stream ended: what is left of `buf[:end]` goes out."""
        self._emit(buf, end)

    def _emit(self, buf: bytearray, upto: int) -> None:
        if upto > self._emitted:
            with memoryview(buf) as view:
                self._write(view[self._emitted : upto])
            self._emitted = upto


class Freezer(Passing):
    """Rewrites a plain dump as it streams into psql, for a faster replay: each table whose
    section names it in both pg_dump's comment and its COPY line (not a partition's rows loaded
    through its root) is emptied and loaded with FREEZE, in the same transaction:

        TRUNCATE ONLY public.t;
        COPY public.t (id, note) FROM stdin WITH (FREEZE);

    Its rows are then written frozen and all-visible: reading them later (index builds, the
    checksums read back, the app's first queries) sets no hint bits, which with data checksums
    would WAL-log every page once more. The TRUNCATE of a table created by this same replay is
    what FREEZE requires (it gives the table a new, empty file).

    `commit_each`: each such table gets a transaction of its own (`BEGIN;` before the TRUNCATE,
    `COMMIT;` after its `\\.`), then `SELECT 'sotadb-loaded HEX';` (HEX: its COPY name's bytes)
    so that the session's output says which table is complete. Without it the statements join
    the caller's transaction (`psql --single-transaction`, or its own BEGIN). Everything else
    passes unchanged; `write` receives the output in order."""

    def __init__(self, write: Callable[[bytes | memoryview], object], *, commit_each: bool) -> None:
        super().__init__(write)
        self._commit_each = commit_each
        self._frozen: bytes | None = None  # the open section's COPY name, when rewritten

    def _header(
        self, buf: bytearray, found: int, copy_start: int, line_end: int, target: bytes
    ) -> None:
        self._frozen = None
        if not names_itself(buf, found, target):
            return
        self._emit(buf, copy_start)
        header = bytes(buf[copy_start:line_end])
        self._write(
            (b"BEGIN;\n" if self._commit_each else b"")
            + b"TRUNCATE ONLY "
            + target
            + b";\n"
            + header[: -len(_FROM_STDIN)]
            + b"FROM stdin WITH (FREEZE);"
        )
        self._emitted = line_end
        self._frozen = target

    def _ended(self, buf: bytearray, after: int) -> None:
        if self._frozen is not None and self._commit_each:
            self._emit(buf, after)
            self._write(
                b"COMMIT;\nSELECT '" + LOADED + b" " + self._frozen.hex().encode() + b"';\n"
            )
        self._frozen = None


def names_itself(buf: bytearray, found: int, target: bytes) -> bool:
    """Whether the section whose comment's mark is at `found` loads the table its comment
    names (`target`, its COPY name), not a partition's rows through their root."""
    names = _TARGET.match(target)
    line = buf.rfind(b"\n", 0, found)
    if names is None or line < 0:
        return False
    comment = (
        b"-- Data for Name: "
        + _unquote(names.group(2))
        + b"; Type: TABLE DATA; Schema: "
        + _unquote(names.group(1))
        + b"; Owner: "
    )
    return buf.startswith(comment, line + 1)


def _unquote(identifier: bytes) -> bytes:
    if identifier.startswith(b'"'):
        return identifier[1:-1].replace(b'""', b'"')
    return identifier


def checksum_stream(
    read_into: Callable[[memoryview], int], out: Callable[[memoryview], object] | None = None
) -> dict[str, tuple[int, str]]:
    """Scan what `read_into` puts in the buffer it is given (0: the end) and pass those bytes on
    to `out` unchanged; the tables' rows and sha256. The buffer is reused: no copy but the read."""
    sections = Sections()
    _drive(sections, read_into, out)
    return sections.finish()


def freeze_stream(
    read_into: Callable[[memoryview], int],
    write: Callable[[bytes | memoryview], object],
    *,
    commit_each: bool,
) -> None:
    """The stream `read_into` reads, rewritten by `Freezer` into `write`."""
    pass_stream(Freezer(write, commit_each=commit_each), read_into)


def pass_stream(passing: Passing, read_into: Callable[[memoryview], int]) -> None:
    """The whole stream `read_into` reads, through `passing` (which must not end inside a
    section: `DumpInvalid`)."""
    buf, filled = _drive(passing, read_into, None)
    passing.flush(buf, filled)
    passing.finish()


def _drive(
    sections: Sections,
    read_into: Callable[[memoryview], int],
    out: Callable[[memoryview], object] | None,
) -> tuple[bytearray, int]:
    """Feed `sections` the whole stream; the buffer and how much of it is filled at the end."""
    buf = bytearray(2 * CHUNK)
    buf[0:1] = b"\n"  # as if a line ended just before the stream: "COPY " at its start
    filled = 1
    while True:
        if len(buf) - filled < CHUNK:  # a long COPY line being carried: grow
            buf.extend(bytes(CHUNK))
        with memoryview(buf) as view:
            count = read_into(view[filled : filled + CHUNK])
            if count == 0:
                break
            if out is not None:
                out(view[filled : filled + count])
        filled += count
        keep = sections.scan(buf, filled)
        buf[0 : filled - keep] = buf[keep:filled]
        filled -= keep
    return buf, filled


def chunk_reader(chunks: Iterable[bytes]) -> Callable[[memoryview], int]:
    """A `read_into` over chunks of bytes (each cut to the buffer it is read into)."""
    pending = [memoryview(chunk) for chunk in reversed(list(chunks))]

    def read_into(view: memoryview) -> int:
        while pending and not pending[-1]:
            pending.pop()
        if not pending:
            return 0
        chunk = pending.pop()
        count = min(len(chunk), len(view))
        view[:count] = chunk[:count]
        if count < len(chunk):
            pending.append(chunk[count:])
        return count

    return read_into


def result_lines(tables: dict[str, tuple[int, str]]) -> str:
    return "".join(
        json.dumps({"kind": "table", "name": name, "rows": rows, "checksum": f"sha256:{digest}"})
        + "\n"
        for name, (rows, digest) in sorted(tables.items())
    )


def widen(descriptor: int) -> None:
    # Not a pipe, or above the system's limit: the default size works too.
    with contextlib.suppress(OSError):
        fcntl.fcntl(descriptor, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


def _write_all(descriptor: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]


def main(argv: list[str]) -> int:
    mode = argv[1] if len(argv) > 1 else ""
    if mode not in ("pass", "sum", "freeze", "freeze-commit"):
        sys.stderr.write("usage: copyhash pass|sum|freeze|freeze-commit\n")
        return 2
    widen(0)
    if mode != "sum":
        widen(1)
    if mode.startswith("freeze"):
        return _freeze(commit_each=mode == "freeze-commit")
    try:
        tables = checksum_stream(
            lambda view: os.readv(0, [view]),
            (lambda view: _write_all(1, view)) if mode == "pass" else None,
        )
    except DumpInvalid as e:
        sys.stderr.write(f"sotadb: checksums: {e}\n")
        return 1
    except BrokenPipeError:
        sys.stderr.write("sotadb: checksums: the compressor stopped reading\n")
        return 1
    (sys.stderr if mode == "pass" else sys.stdout).write(result_lines(tables))
    return 0


def _freeze(*, commit_each: bool) -> int:
    try:
        freeze_stream(
            lambda view: os.readv(0, [view]),
            lambda data: _write_all(1, data),
            commit_each=commit_each,
        )
    except DumpInvalid as e:
        sys.stderr.write(f"sotadb: replay: {e}\n")
        return 1
    except BrokenPipeError:
        sys.stderr.write("sotadb: replay: psql stopped reading\n")
        return 1
    return 0


def source() -> str:
    """This program's text, to run as `python3 -c` where the sotadb package is not installed."""
    with open(__file__, encoding="utf-8") as handle:
        return handle.read()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
