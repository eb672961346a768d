"""The sweep dir's writer lock (raysweep.store.writer_lock): one holder, a refusal that names it, stale locks
taken over, a heartbeat that keeps a live one fresh, and `raysweep sweep` refused before any work. Two real
`raysweep sweep` processes racing for one dir: tests/integration/test_faults.py."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from raysweep.spec.errors import SweepDirError
from raysweep.store.layout import SweepLayout
from raysweep.store.writer_lock import STALE_AFTER_S, SweepLockedError, WriterLock, check_not_locked, writer_lock
from tests.conftest import run_cli_in_process, tiny_spec_dict, write_spec


@pytest.fixture
def layout(tmp_path) -> SweepLayout:
    (tmp_path / "sweep").mkdir()
    return SweepLayout.at(tmp_path / "sweep")


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _plant(layout: SweepLayout, **holder) -> None:
    layout.writer_lock_file.write_text(json.dumps({"command": "raysweep sweep", "token": "theirs", **holder}))


def test_a_second_writer_is_refused_naming_the_holder_and_release_frees_the_dir(layout):
    with writer_lock(layout, "raysweep sweep"):
        holder = json.loads(layout.writer_lock_file.read_text())
        assert (holder["host"], holder["pid"], holder["command"]) == (socket.gethostname(), os.getpid(),
                                                                      "raysweep sweep")
        with pytest.raises(SweepLockedError) as refused:
            WriterLock(layout, "raysweep resume").acquire()
        assert f"(host {socket.gethostname()}, pid {os.getpid()}," in str(refused.value)
        assert isinstance(refused.value, SweepDirError)  # the CLI's one-line error, exit 2
        with pytest.raises(SweepLockedError):
            check_not_locked(layout)
    assert not layout.writer_lock_file.exists()
    check_not_locked(layout)
    with writer_lock(layout, "raysweep resume"):
        assert json.loads(layout.writer_lock_file.read_text())["command"] == "raysweep resume"


def test_a_lock_whose_pid_is_gone_on_this_host_is_taken_over_with_a_message(layout, caplog):
    dead = _dead_pid()
    _plant(layout, host=socket.gethostname(), pid=dead, heartbeat=time.time())
    with caplog.at_level(logging.WARNING, logger="raysweep"), writer_lock(layout, "raysweep resume"):
        assert json.loads(layout.writer_lock_file.read_text())["pid"] == os.getpid()
    assert f"its pid {dead} is gone on this host" in caplog.text


def test_another_hosts_lock_is_live_until_its_heartbeat_is_stale(layout, caplog):
    _plant(layout, host="elsewhere", pid=1, heartbeat=time.time() - 5)
    with pytest.raises(SweepLockedError, match=r"host elsewhere, pid 1, heartbeat \d+ s ago"):
        WriterLock(layout, "raysweep sweep").acquire()
    _plant(layout, host="elsewhere", pid=1, heartbeat=time.time() - STALE_AFTER_S - 1)
    with caplog.at_level(logging.WARNING, logger="raysweep"), writer_lock(layout, "raysweep sweep"):
        pass
    assert "heartbeat is older than" in caplog.text


def test_an_unreadable_lock_file_is_judged_by_its_age(layout):
    layout.writer_lock_file.write_text("{torn")  # a writer still filling it in, or one that died doing so
    with pytest.raises(SweepLockedError, match="a lock file that names no holder"):
        WriterLock(layout, "raysweep sweep").acquire()
    old = time.time() - STALE_AFTER_S - 1
    os.utime(layout.writer_lock_file, (old, old))
    with writer_lock(layout, "raysweep sweep"):
        assert json.loads(layout.writer_lock_file.read_text())["pid"] == os.getpid()


def test_the_heartbeat_refreshes_a_held_lock(layout):
    lock = WriterLock(layout, "raysweep sweep", heartbeat_s=0.05)
    lock.acquire()
    first = json.loads(layout.writer_lock_file.read_text())["heartbeat"]
    deadline = time.time() + 10
    while json.loads(layout.writer_lock_file.read_text())["heartbeat"] == first:
        assert time.time() < deadline, "the heartbeat never advanced"
        time.sleep(0.05)
    lock.release()
    assert not layout.writer_lock_file.exists()


def test_release_leaves_a_lock_someone_took_over_alone(layout):
    lock = WriterLock(layout, "raysweep sweep", heartbeat_s=3600)  # no beat inside the test
    lock.acquire()
    _plant(layout, host="elsewhere", pid=1, heartbeat=time.time())  # taken over while this writer was frozen
    lock.release()
    assert json.loads(layout.writer_lock_file.read_text())["host"] == "elsewhere"


def test_sweep_on_a_locked_dir_fails_in_one_line_before_any_work(tmp_path, capsys):
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec_dict(tmp_path / "runs", name="locked"))
    sweep = SweepLayout.at(tmp_path / "runs" / "locked")
    sweep.root.mkdir(parents=True)
    _plant(sweep, host="elsewhere", pid=4242, heartbeat=time.time())
    code, out, err = run_cli_in_process(["sweep", str(spec)], capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert re.fullmatch(re.escape(f"raysweep sweep: error: {sweep.writer_lock_file}: the sweep dir is being written "
                                  "by raysweep sweep (host elsewhere, pid 4242, heartbeat ") + r"\d+ s ago\); wait "
                        r"for it to finish, or stop it \(its lock is taken over once its pid is gone or its "
                        r"heartbeat is \d+ s old\)", line), line
    assert sorted(p.name for p in sweep.root.iterdir()) == [".writer.lock"]  # no data, no spec.yaml
    assert json.loads(sweep.writer_lock_file.read_text())["pid"] == 4242  # the holder's lock untouched


def test_a_filesystem_without_hard_links_still_gets_one_writer(layout, monkeypatch):
    def no_links(*_):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)  # e.g. some FUSE mounts and SMB shares
    with writer_lock(layout, "raysweep sweep"):
        assert json.loads(layout.writer_lock_file.read_text())["pid"] == os.getpid()
        with pytest.raises(SweepLockedError, match=f"pid {os.getpid()},"):
            WriterLock(layout, "raysweep resume").acquire()
    assert not layout.writer_lock_file.exists()
