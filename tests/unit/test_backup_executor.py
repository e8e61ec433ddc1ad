"""The local executor (a Kubernetes Job's): streams both ways, reports status, keeps the pid
line to itself, and ends the whole process group when interrupted."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sotadb.backup.executors import LocalExecutor, capture
from sotadb.backup.scripts import Script


def test_streams_stdin_to_stdout_and_reports_status():
    data = [os.urandom(1 << 16) for _ in range(40)]
    out = bytearray()
    status = LocalExecutor().run(Script("cat; exit 3"), stdin=iter(data), stdout=out.extend)
    assert status == 3
    assert bytes(out) == b"".join(data)


def test_stderr_arrives_line_by_line_without_the_pid_line():
    result = capture(LocalExecutor(), Script("echo one >&2; printf 'two\\nthree' >&2; echo out"))
    assert result.stderr == ["one", "two", "three"]
    assert result.stdout == "out\n"
    assert result.status == 0


def test_environment_reaches_the_script():
    result = capture(LocalExecutor({"A": "1"}), Script('echo "$A$B"', env={"B": "2"}))
    assert result.stdout.strip() == "12"


def test_an_exception_in_the_sink_ends_the_process_group(tmp_path):
    marker = tmp_path / "child.pid"
    script = Script(f"sleep 30 & echo $! > {marker}; exec yes")  # the pid is written first

    def explode(_: bytes) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        LocalExecutor().run(script, stdout=explode)
    child = int(marker.read_text())
    for _ in range(50):
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
            state = stat.rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return
        if state == "Z":  # killed, waiting for its new parent to reap it
            return
        time.sleep(0.05)
    pytest.fail("the script's background child survived")
