"""The parallel replay of a plain dump: one stream, several psql sessions.

A standalone program (standard library only, like `copyhash`, whose text it needs and gets in
SOTADB_COPYHASH where sotadb is not installed):

    python3 -c "$SOURCE" SESSIONS < dump     (PG* in the environment say where to connect)

For a database nobody else uses yet (a restore's side database). SOTADB_ROLE, when set, is the
role every session acts as (`SET ROLE`): the one that owns what the dump creates.

1. Session 0 replays everything before the first table's rows (the schema), as psql would.
2. Every table's rows are cut into COPYs of about `UNIT` bytes, each handed to whichever
   session has the least waiting, so the loads of one large table share all the sessions (a
   COPY is one core's work: the 2.7 M-row table of `bench.backup` takes 6 s alone). Each COPY
   commits on its own (synchronous_commit on), and the session then reads the pages it just
   filled, still in shared buffers: that sets their hint bits now, where the first index build
   would otherwise dirty and, with data checksums, WAL-log every page again (3 s more on that
   table, measured). FREEZE cannot do this here: it needs the table emptied in the loading
   transaction, so one session per table.
3. Once every session has committed its rows: the run of indexes and primary/unique keys that
   pg_dump writes first after the data is built in parallel, the largest table's first (its
   entries stay together, in order, in one session); the rest (foreign keys, triggers, ...)
   follows in session 0, in the dump's order.

stdout: one JSON line per table, `{"kind": "loaded", "name": "public.t", "rows": N}`, N being
what the server's COPY reports counted. Any failure ends every session and exits 1; psql's own
error messages pass through on stderr.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final


def _install_copyhash() -> None:
    """Where sotadb is not installed (next to PostgreSQL), copyhash's text comes in the
    environment: it is made the module `sotadb.backup.copyhash` before the import below."""
    if importlib.util.find_spec("sotadb") is not None:
        return
    for package in ("sotadb", "sotadb.backup"):
        module = types.ModuleType(package)
        module.__path__ = []
        sys.modules[package] = module
    module = types.ModuleType("sotadb.backup.copyhash")
    sys.modules[module.__name__] = module
    exec(compile(os.environ["SOTADB_COPYHASH"], "copyhash", "exec"), module.__dict__)  # noqa: S102


_install_copyhash()

from sotadb.backup import copyhash  # noqa: E402

UNIT: Final = 4 << 20  # rows per COPY: its pages (~5 MB) are still in the 16 MB ring it writes
MAX_TAIL: Final = 64 << 20  # post-data text held back to plan its index builds
MAX_SESSIONS: Final = 8
SEND_BUFFER: Final = 4 << 20
SYNC: Final = b"sotadb-sync"
DONE: Final = b"sotadb-done"
COPYING: Final = b"sotadb-copy"
_COPY_TAG: Final = re.compile(rb"COPY (\d+)\Z")
_ENTRY: Final = re.compile(
    rb"^--\n-- Name: [^\n]*; Type: (?P<type>[A-Z ]+); Schema: [^\n]*; Owner: [^\n]*\n--\n",
    re.MULTILINE,
)
_QUALIFIED: Final = rb"(" + copyhash.IDENT + rb"\." + copyhash.IDENT + rb")"
_ON_TABLE: Final = re.compile(
    rb"(?:ALTER TABLE (?:ONLY )?|CREATE (?:UNIQUE )?INDEX "
    + copyhash.IDENT
    + rb" ON (?:ONLY )?)"
    + _QUALIFIED
)
_PARALLEL_TYPES: Final = (b"INDEX", b"CONSTRAINT")
# Lines that set session state a later entry relies on: an entry holding one is not moved.
_STATEFUL: Final = (b"SET ", b"RESET ", b"SELECT pg_catalog.set_config(", b"\\")
# The dump's own session settings (client_encoding, search_path, ...), for the other sessions.
_HEADER_LINE: Final = re.compile(
    rb"^(?:SET [a-z_]+ = [^\n;]*;|SELECT pg_catalog\.set_config\('search_path', '', false\);"
    rb"|\\restrict [A-Za-z0-9]+)$",
    re.MULTILINE,
)
_UNRESTRICT: Final = re.compile(rb"\n\\unrestrict [A-Za-z0-9]+\n\s*\Z")
HEADER_BYTES: Final = 64 << 10


class ReplayFailed(Exception):
    """A session ended before its work did (psql said why, on stderr)."""


def quote_literal(text: bytes) -> bytes:
    return b"'" + text.replace(b"'", b"''") + b"'"


def quote_ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def settings_sql(sessions: int, role: str | None) -> bytes:
    """Each session's own settings. Index builds run `sessions` at a time: together they sort
    in as much memory as shared_buffers (a quarter of the server's)."""
    sql = (
        "SET synchronous_commit = off;\n"
        "SET max_parallel_workers_per_gather = 0;\n"
        "SELECT pg_catalog.set_config('maintenance_work_mem', (GREATEST(1024, "
        "pg_catalog.pg_size_bytes(pg_catalog.current_setting('shared_buffers')) / 1024 / "
        f"{sessions}))::text || 'kB', false);\n"
    )
    if role:
        sql += f"SET ROLE {quote_ident(role)};\n"
    return sql.encode()


def copy_unit(
    target: bytes, header: bytes, rows: bytes | bytearray, *, hint: bool
) -> list[bytes | bytearray]:
    """One COPY of some of a table's rows, announced (so its row count is known to be this
    table's), then, with `hint`, the read of the pages it filled (see the module docstring)."""
    hexed = target.hex().encode()
    if not hint:
        return [b"SELECT '" + COPYING + b" " + hexed + b"';\n", header, b"\n", rows, b"\\.\n"]
    relation = quote_literal(target)
    return [
        b"SELECT '" + COPYING + b" " + hexed + b" ' || pg_catalog.set_config('sotadb.from', "
        b"(pg_catalog.pg_relation_size(" + relation + b") / "
        b"pg_catalog.current_setting('block_size')::bigint)::text, false);\n",
        header,
        b"\n",
        rows,
        b"\\.\nSELECT pg_catalog.count(*) FROM ONLY " + target + b" WHERE ctid >= "
        b"('(' || pg_catalog.current_setting('sotadb.from') || ',0)')::tid;\n",
    ]


@dataclass
class Entry:
    """One of pg_dump's post-data entries: its text, and the table it is about (if known)."""

    text: bytes
    kind: bytes = b""
    table: bytes | None = None

    @property
    def stateful(self) -> bool:
        """It sets session state (pg_dump's SET default_tablespace, say) for what follows."""
        return stateful(self.text.split(b"\n--\n", 1)[-1])

    @property
    def movable(self) -> bool:
        """An index or key that may be built in any session, in any order with its like."""
        return self.kind in _PARALLEL_TYPES and not self.stateful


def stateful(text: bytes) -> bool:
    return any(line.startswith(_STATEFUL) for line in text.splitlines())


def entries(tail: bytes) -> tuple[bytes, list[Entry]]:
    """The text before the first entry, and the entries (each from its comment block on)."""
    starts = [match.start() for match in _ENTRY.finditer(tail)]
    if not starts:
        return tail, []
    found: list[Entry] = []
    for start, end in zip(starts, [*starts[1:], len(tail)], strict=True):
        text = tail[start:end]
        match = _ENTRY.match(text)
        table = _ON_TABLE.search(text)
        found.append(
            Entry(
                text=text,
                kind=match.group("type") if match else b"",
                table=table.group(1) if table else None,
            )
        )
    return tail[: starts[0]], found


@dataclass
class PostData:
    """The post-data text split three ways (see the module docstring, step 3)."""

    before: bytes
    parallel: list[list[Entry]] = field(default_factory=list)  # per table, largest first
    after: bytes = b""


def plan(tail: bytes, weights: dict[bytes, int]) -> PostData:
    """How to run the text after the last table's rows. `weights`: bytes loaded per table."""
    end = _UNRESTRICT.search(tail)
    closing = tail[end.start() :] if end else b""
    head, found = entries(tail[: end.start()] if end else tail)
    # The parallel run starts at the first index or key, unless session state was set before
    # it: a session of its own would not have that state.
    first = 0 if not stateful(head) else len(found)
    while first < len(found) and not found[first].movable and not found[first].stateful:
        first += 1
    last = first
    while last < len(found) and found[last].movable:
        last += 1
    groups: dict[bytes | int, list[Entry]] = {}
    for index, entry in enumerate(found[first:last]):
        groups.setdefault(entry.table if entry.table is not None else index, []).append(entry)
    ordered = sorted(
        groups.items(),
        key=lambda item: -weights.get(item[0], 0) if isinstance(item[0], bytes) else 0,
    )
    return PostData(
        before=head + b"".join(entry.text for entry in found[:first]),
        parallel=[group for _, group in ordered],
        after=b"".join(entry.text for entry in found[last:]) + closing,
    )


class Session:
    """One psql, fed through a non-blocking socket; what it prints is read as it comes.

    A socket, not a pipe: psql reads its input 4 KB at a time, and a pipe reports room to write
    each time one is read (so the writer wakes for every 4 KB); a unix socket only once a
    quarter of its buffer is left (measured: 0.3 CPU-s less for bench.backup's 1 GB)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self._input, theirs = socket.socketpair()
        # Capped by net.core.wmem_max (about 400 KB with the kernel's doubling) unless raised.
        self._input.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        with theirs:
            self.process = subprocess.Popen(
                ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"],
                stdin=theirs.fileno(),
                stdout=subprocess.PIPE,
            )
        assert self.process.stdout is not None
        self.stdin = self._input.fileno()
        self.stdout = self.process.stdout.fileno()
        os.set_blocking(self.stdin, False)
        self.outbox: collections.deque[memoryview] = collections.deque()
        self.waiting = 0  # bytes in the outbox
        self.partial = b""
        self.copying: str | None = None
        self.synced = 0
        self.done = 0
        self.closed = False
        self.ended = False  # its output reached its end

    def send(self, *parts: bytes | bytearray) -> None:
        for part in parts:
            if part:
                self.outbox.append(memoryview(part))
                self.waiting += len(part)

    def write_some(self) -> None:
        while self.outbox:
            head = self.outbox[0]
            try:
                written = os.write(self.stdin, head)
            except BlockingIOError:
                return
            except BrokenPipeError:
                raise self.failed() from None
            self.waiting -= written
            if written == len(head):
                self.outbox.popleft()
            else:
                self.outbox[0] = head[written:]

    def read_some(self, rows: dict[str, int]) -> None:
        """Read what it printed; at the end of its output, `ended` (and its exit awaited)."""
        data = os.read(self.stdout, 1 << 16)
        if not data:
            self.ended = True
            self.process.wait()
            return
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            self._line(line, rows)

    def _line(self, line: bytes, rows: dict[str, int]) -> None:
        tag = _COPY_TAG.match(line)
        if tag is not None:
            if self.copying is not None:
                rows[self.copying] = rows.get(self.copying, 0) + int(tag.group(1))
            self.copying = None
        elif line.startswith(COPYING + b" "):
            hexed = line.split(b" ")[1]
            self.copying = bytes.fromhex(hexed.decode()).decode("utf-8", "surrogateescape")
        elif line.startswith(SYNC + b" "):
            self.synced = int(line.split(b" ")[1])
        elif line == DONE:
            self.done += 1

    def failed(self) -> ReplayFailed:
        status = self.process.poll()
        if status is None:
            return ReplayFailed(f"session {self.index} stopped reading")
        return ReplayFailed(f"session {self.index} ended (psql exit status {status})")

    def close(self) -> None:
        """Its work is all sent: end its input."""
        if not self.closed:
            self._input.close()
            self.closed = True


class Replay:
    """Hands the dump's parts to the sessions (the event loop: `pump`)."""

    def __init__(self, sessions: list[Session], settings: bytes) -> None:
        self.sessions = sessions
        self.rows: dict[str, int] = {}
        self.loaded: dict[bytes, int] = {}  # bytes of rows per table, to plan the index builds
        self.header = bytearray()  # the stream's first bytes, for the dump's session settings
        self.tail = bytearray()  # text after the rows began, until the next table's rows
        self.serial = False  # the tail outgrew MAX_TAIL: everything after the rows is serial
        self.loading = False
        self._syncs = 0
        self._turn = 0
        for session in sessions:
            session.send(settings)

    # ---------------------------------------------------------------- what the splitter hands

    def text(self, data: bytes | memoryview) -> None:
        if not self.loading:
            if len(self.header) < HEADER_BYTES:
                self.header += data[: HEADER_BYTES - len(self.header)]
            self._to(self.sessions[0], bytes(data))
        elif self.serial:
            self._to(self.sessions[0], bytes(data))
        else:
            self.tail += data
            if len(self.tail) > MAX_TAIL:  # (large objects' data, say): from here on, in order
                self.sync(*self.sessions)
                self._to(self.sessions[0], bytes(self.tail))
                self.tail = bytearray()
                self.serial = True

    def rows_begin(self) -> None:
        if not self.loading:
            self.loading = True
            header = bytes(self.header).split(b"\n-- Name: ", 1)[0]  # before the first entry
            settings = b"".join(line + b"\n" for line in _HEADER_LINE.findall(header))
            for session in self.sessions[1:]:
                session.send(settings)
            self.sync(self.sessions[0])  # the schema is in place before any rows
            for session in self.sessions:
                session.send(b"SET synchronous_commit = on;\n")
        elif self.tail:
            self._to(self.sessions[0], bytes(self.tail))
            self.tail = bytearray()

    def unit(self, target: bytes, header: bytes, rows: bytearray, *, hint: bool) -> None:
        self.loaded[target] = self.loaded.get(target, 0) + len(rows)
        candidates = self.sessions[:1] if self.serial else self.sessions
        self.pump(lambda: any(s.waiting < UNIT for s in candidates))
        ready = [s for s in candidates if s.waiting < UNIT]
        session = ready[self._turn % len(ready)]
        self._turn += 1
        session.send(*copy_unit(target, header, rows, hint=hint))
        session.write_some()

    def finish(self) -> None:
        if self.loading and not self.serial:
            post = plan(bytes(self.tail), self.loaded)
            self._to(self.sessions[0], post.before)
            self.sync(*self.sessions)  # every table's rows are committed
            self._build(post.parallel)
            self._to(self.sessions[0], post.after)
        self.pump(lambda: not any(s.outbox for s in self.sessions))
        for session in self.sessions:
            session.close()
        self.pump(lambda: all(s.ended for s in self.sessions), end=True)
        failed = [s for s in self.sessions if s.process.returncode != 0]
        if failed:
            raise failed[0].failed()

    # ---------------------------------------------------------------- the sessions

    def _to(self, session: Session, data: bytes) -> None:
        session.send(data)
        session.write_some()
        if session.waiting > UNIT:
            self.pump(lambda: session.waiting <= UNIT)

    def sync(self, *sessions: Session) -> None:
        """Wait until each of `sessions` has run everything sent to it so far."""
        self._syncs += 1
        marker = b"SELECT '" + SYNC + b" %d';\n" % self._syncs
        for session in sessions:
            session.send(marker)
        self.pump(lambda: all(s.synced == self._syncs for s in sessions))

    def _build(self, groups: list[list[Entry]]) -> None:
        """Each group to the first session free, largest first; back when all are built."""
        pending = collections.deque(groups)
        busy: dict[int, int] = {}  # session index -> its `done` count once its group is built
        while pending or busy:
            for session in self.sessions:
                if pending and session.index not in busy:
                    group = pending.popleft()
                    session.send(*(entry.text for entry in group), b"SELECT '" + DONE + b"';\n")
                    busy[session.index] = session.done + 1
            self.pump(lambda: any(self.sessions[i].done >= n for i, n in busy.items()))
            for index, wanted in list(busy.items()):
                if self.sessions[index].done >= wanted:
                    del busy[index]

    def pump(self, until: Callable[[], bool], *, end: bool = False) -> None:
        """Write and read until `until()`: a session that ends meanwhile is a failure, unless
        `end` (its input is closed and its exit is awaited)."""
        while not until():
            poller = select.poll()
            for session in self.sessions:
                if session.outbox:
                    poller.register(session.stdin, select.POLLOUT)
                if not session.ended:
                    poller.register(session.stdout, select.POLLIN)
            events = dict(poller.poll(1000))
            for session in self.sessions:
                if events.get(session.stdin, 0) & (select.POLLOUT | select.POLLERR):
                    session.write_some()
                if events.get(session.stdout, 0) & (select.POLLIN | select.POLLHUP):
                    session.read_some(self.rows)
                    if session.ended and not end:
                        raise session.failed()


class Splitter(copyhash.Passing):
    """Cuts the stream into the text outside the tables' rows, and each table's rows in units
    of about `UNIT` bytes (whole lines), handed to `replay` in order."""

    def __init__(self, replay: Replay) -> None:
        super().__init__(replay.text)
        self._replay = replay
        self._target = b""
        self._header_line = b""
        self._hint = False
        self._pending = bytearray()

    def _header(
        self, buf: bytearray, found: int, copy_start: int, line_end: int, target: bytes
    ) -> None:
        self._emit(buf, copy_start)
        self._replay.rows_begin()
        self._target = target
        self._header_line = bytes(buf[copy_start:line_end])
        # Rows loaded through a partition root: their pages are the partitions', not its own.
        self._hint = copyhash.names_itself(buf, found, target)
        self._emitted = line_end + 1

    def _emit(self, buf: bytearray, upto: int) -> None:
        if self._name is None:
            super()._emit(buf, upto)
        else:  # the rows went to `_hash`
            self._emitted = max(self._emitted, upto)

    def _hash(self, buf: bytearray, start: int, end: int) -> None:
        if end <= start:
            return
        self._pending += memoryview(buf)[start:end]
        while len(self._pending) >= UNIT:
            cut = self._pending.find(b"\n", UNIT - 1) + 1
            if cut == 0:  # a row longer than what has come of it so far
                return
            rest = self._pending[cut:]
            del self._pending[cut:]
            self._hand(self._pending)
            self._pending = rest

    def _ended(self, buf: bytearray, after: int) -> None:
        if self._pending:
            self._hand(self._pending)
            self._pending = bytearray()
        self._replay.rows.setdefault(self._target.decode("utf-8", "surrogateescape"), 0)
        self._emitted = after

    def _hand(self, rows: bytearray) -> None:
        self._replay.unit(self._target, self._header_line, rows, hint=self._hint)


def session_count(requested: str | None = None) -> int:
    """SESSIONS, else one per core this process may run on (at least 2: one load waits on
    its commit's flush while another parses), at most MAX_SESSIONS."""
    if requested:
        return max(1, min(MAX_SESSIONS, int(requested)))
    return max(2, min(MAX_SESSIONS, len(os.sched_getaffinity(0))))


def result_lines(rows: dict[str, int]) -> str:
    return "".join(
        json.dumps({"kind": "loaded", "name": name, "rows": count}) + "\n"
        for name, count in sorted(rows.items())
    )


def parse_output(lines: Iterable[str]) -> dict[str, int]:
    """`result_lines` read back: table -> rows loaded (other lines are ignored)."""
    loaded: dict[str, int] = {}
    for line in lines:
        if not line.startswith("{"):
            continue
        value = json.loads(line)
        if isinstance(value, dict) and value.get("kind") == "loaded":
            name, rows = value.get("name"), value.get("rows")
            if isinstance(name, str) and isinstance(rows, int):
                loaded[name] = rows
    return loaded


def run(read_into: Callable[[memoryview], int], count: int, role: str | None) -> dict[str, int]:
    sessions = [Session(index) for index in range(count)]
    try:
        replay = Replay(sessions, settings_sql(count, role))
        copyhash.pass_stream(Splitter(replay), read_into)
        replay.finish()
    except BaseException:
        for session in sessions:
            if session.process.poll() is None:
                session.process.send_signal(signal.SIGTERM)
        for session in sessions:
            session.process.wait()
        raise
    return replay.rows


def main(argv: Iterable[str]) -> int:
    arguments = list(argv)[1:]
    copyhash.widen(0)
    try:
        rows = run(
            lambda view: os.readv(0, [view]),
            session_count(arguments[0] if arguments else None),
            os.environ.get("SOTADB_ROLE") or None,
        )
    except (ReplayFailed, copyhash.DumpInvalid) as e:
        sys.stderr.write(f"sotadb: replay: {e}\n")
        return 1
    sys.stdout.write(result_lines(rows))
    return 0


def source() -> str:
    """This program's text, to run as `python3 -c` where the sotadb package is not installed
    (with copyhash's in SOTADB_COPYHASH)."""
    with open(__file__, encoding="utf-8") as handle:
        return handle.read()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
