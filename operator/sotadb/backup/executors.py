"""Where a backup script runs: `docker exec` into a container, or a local subprocess.

Both stream: stdin from an iterator of chunks, stdout to a callback (bytes as they come),
stderr to a callback line by line; `run` returns the exit status. The first stderr line of
every script is `sotadb-pid N` (added here); the executor keeps it, so that an interrupted run
(an exception in a callback, Ctrl-C, SIGTERM) can end the script's whole process group instead
of leaving it blocked on a pipe nobody reads (which `docker exec` does when its client goes
away). A runner killed with SIGKILL cannot do that; the dump script itself ends such a
leftover on the next run (see `scripts`).

`LocalExecutor` is what a Kubernetes Job uses: the Job's container has the PostgreSQL client
tools, and libpq's environment points at the database's Service.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, cast

import docker
import docker.errors

from sotadb.backup.errors import BackupFailed
from sotadb.backup.scripts import PID_PREFIX, Script
from sotadb.docker import engine

CHUNK: Final = 1 << 20
EXIT_WAIT: Final = 30.0  # seconds for the engine to report an exit status after EOF
MAX_STDERR_LINE: Final = 1 << 20

StdoutSink = Callable[[bytes], None]
LineSink = Callable[[str], None]


class Executor(Protocol):
    @property
    def where(self) -> str:
        """Where scripts run, for messages (e.g. `sota-db-my-app`)."""
        ...

    def run(
        self,
        script: Script,
        *,
        stdin: Iterable[bytes] | None = None,
        stdout: StdoutSink | None = None,
        stderr: LineSink | None = None,
    ) -> int: ...


@dataclass
class Captured:
    status: int
    stdout: str
    stderr: list[str] = field(default_factory=list)

    def tail(self, lines: int = 5) -> str:
        return "; ".join(line for line in self.stderr[-lines:] if line.strip())


def capture(
    executor: Executor, script: Script, *, stdin: Iterable[bytes] | None = None
) -> Captured:
    """Run a script whose output is small, and keep all of it."""
    out = bytearray()
    err: list[str] = []
    status = executor.run(script, stdin=stdin, stdout=out.extend, stderr=err.append)
    return Captured(status, out.decode("utf-8", errors="replace"), err)


def _with_pid(script: Script) -> list[str]:
    argv = script.argv
    return [*argv[:2], f'echo "{PID_PREFIX}$$" >&2\n{argv[2]}', *argv[3:]]


class _Lines:
    """Splits a byte stream into lines; the first `sotadb-pid` line is kept, not passed on."""

    def __init__(self, sink: LineSink | None) -> None:
        self.sink = sink
        self.pending = bytearray()
        self.pid: int | None = None

    def feed(self, data: bytes) -> None:
        self.pending.extend(data)
        while (end := self.pending.find(b"\n")) >= 0:
            self._emit(bytes(self.pending[:end]))
            del self.pending[: end + 1]
        if len(self.pending) > MAX_STDERR_LINE:
            self._emit(bytes(self.pending))
            self.pending.clear()

    def close(self) -> None:
        if self.pending:
            self._emit(bytes(self.pending))
            self.pending.clear()

    def _emit(self, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace")
        if self.pid is None and line.startswith(PID_PREFIX):
            with contextlib.suppress(ValueError):
                self.pid = int(line[len(PID_PREFIX) :])
                return
        if self.sink is not None:
            self.sink(line)


# ---------------------------------------------------------------- docker exec


class DockerExecutor:
    """Scripts run by `docker exec -u USER CONTAINER bash -c ...`, streamed over the engine's
    hijacked connection (stdout/stderr multiplexed in 8-byte-header frames)."""

    def __init__(
        self,
        client: docker.DockerClient,
        container: str,
        *,
        user: str = "postgres",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.client = client
        self.container = container
        self.user = user
        self.env = dict(env or {})

    @property
    def where(self) -> str:
        return self.container

    def run(
        self,
        script: Script,
        *,
        stdin: Iterable[bytes] | None = None,
        stdout: StdoutSink | None = None,
        stderr: LineSink | None = None,
    ) -> int:
        api = self.client.api
        environment = {**self.env, **script.env}
        try:
            created = api.exec_create(
                self.container,
                _with_pid(script),
                stdin=stdin is not None,
                stdout=True,
                stderr=True,
                user=self.user,
                environment=environment,
            )
        except docker.errors.NotFound:
            raise BackupFailed(f"container {self.container} does not exist") from None
        except docker.errors.APIError as e:
            if e.status_code == 409:  # "container ... is not running" (or paused)
                raise BackupFailed(f"container {self.container} is not running") from None
            raise BackupFailed(f"docker exec in {self.container}: {e.explanation or e}") from e
        except docker.errors.DockerException as e:
            raise BackupFailed(f"the Docker engine stopped answering ({e})") from e
        exec_id = created["Id"]
        connection = engine.call(
            f"start docker exec in {self.container}", lambda: api.exec_start(exec_id, socket=True)
        )
        raw: socket.socket = getattr(connection, "_sock", connection)
        raw.settimeout(None)  # a dump may wait on a lock, a restore on an index, for minutes
        lines = _Lines(stderr)
        writer: threading.Thread | None = None
        finished = False
        try:
            if stdin is not None:
                writer = threading.Thread(
                    target=_feed_socket, args=(raw, stdin), name="sotadb-exec-stdin", daemon=True
                )
                writer.start()
            for stream, payload in _frames(raw):
                if stream == 1:
                    if stdout is not None:
                        stdout(payload)
                elif stream == 2:
                    lines.feed(payload)
            lines.close()
            finished = True
        finally:
            if not finished and lines.pid is not None:
                self._end_group(lines.pid)
            with contextlib.suppress(OSError):
                raw.close()
            with contextlib.suppress(Exception):
                connection.close()
            if writer is not None:
                writer.join(timeout=5)
        return self._exit_status(exec_id)

    def _exit_status(self, exec_id: str) -> int:
        deadline = time.monotonic() + EXIT_WAIT
        while True:
            state: dict[str, Any] = engine.call(
                "inspect docker exec", lambda: self.client.api.exec_inspect(exec_id)
            )
            if not state.get("Running") and state.get("ExitCode") is not None:
                return int(state["ExitCode"])
            if time.monotonic() > deadline:
                raise BackupFailed(f"docker exec in {self.container} reported no exit status")
            time.sleep(0.05)

    def _end_group(self, pid: int) -> None:
        """Best effort: the interrupted script's process group, killed by a second exec."""
        with contextlib.suppress(Exception):
            self.client.api.exec_start(
                self.client.api.exec_create(
                    self.container, ["kill", "-KILL", "--", f"-{pid}"], user=self.user
                )["Id"]
            )


def _feed_socket(raw: socket.socket, chunks: Iterable[bytes]) -> None:
    try:
        for chunk in chunks:
            raw.sendall(chunk)
    except OSError:
        return  # the script stopped reading (it failed, or it is done); its status says which
    with contextlib.suppress(OSError):
        raw.shutdown(socket.SHUT_WR)


def _frames(raw: socket.socket) -> Iterator[tuple[int, bytes]]:
    header = bytearray(8)
    while True:
        if not _receive_into(raw, memoryview(header)):
            return
        stream, size = struct.unpack(">BxxxL", header)
        payload = bytearray(size)
        if not _receive_into(raw, memoryview(payload)):
            return
        yield stream, bytes(payload)


def _receive_into(raw: socket.socket, view: memoryview) -> bool:
    """Fill `view` completely; False at a clean end of stream before the first byte."""
    received = 0
    while received < len(view):
        count = raw.recv_into(view[received:])
        if count == 0:
            if received == 0:
                return False
            raise BackupFailed("the Docker engine closed the exec stream mid-frame")
        received += count
    return True


# ---------------------------------------------------------------- local subprocess


class LocalExecutor:
    """Scripts run as local subprocesses, each in a session of its own (a Kubernetes Job)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(env or {})

    @property
    def where(self) -> str:
        return "this container"

    def run(
        self,
        script: Script,
        *,
        stdin: Iterable[bytes] | None = None,
        stdout: StdoutSink | None = None,
        stderr: LineSink | None = None,
    ) -> int:
        environment = {**os.environ, **self.env, **script.env}
        process = subprocess.Popen(
            _with_pid(script),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment,
            start_new_session=True,
        )
        out_pipe = cast(io.BufferedReader, process.stdout)
        lines = _Lines(stderr)
        err_pipe = cast(io.BufferedReader, process.stderr)
        reader = threading.Thread(
            target=_drain, args=(err_pipe, lines), name="sotadb-local-stderr", daemon=True
        )
        reader.start()
        writer: threading.Thread | None = None
        if stdin is not None:
            writer = threading.Thread(
                target=_feed_pipe, args=(process, stdin), name="sotadb-local-stdin", daemon=True
            )
            writer.start()
        finished = False
        try:
            while chunk := out_pipe.read1(CHUNK):
                if stdout is not None:
                    stdout(chunk)
            status = process.wait()
            finished = True
        finally:
            if not finished:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            reader.join(timeout=5)
            lines.close()
            if writer is not None:
                writer.join(timeout=5)
            out_pipe.close()
            err_pipe.close()
        return status


def _drain(pipe: io.BufferedReader, lines: _Lines) -> None:
    while chunk := pipe.read1(CHUNK):
        lines.feed(chunk)


def _feed_pipe(process: subprocess.Popen[bytes], chunks: Iterable[bytes]) -> None:
    assert process.stdin is not None
    try:
        for chunk in chunks:
            process.stdin.write(chunk)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        process.stdin.close()
