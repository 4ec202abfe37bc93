"""tail.Follower on real files: whole lines exactly once, across rotation and restarts."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

from withcache.store import Checkpoint
from withcache.tail import Changes, Follower


class Clock:
    """Only clocks get replaced in tests: the grace period after a rename is time-based."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def drain(f: Follower) -> list[bytes]:
    """Every whole line the follower hands out until it has nothing new."""
    out: list[bytes] = []
    for _ in range(10_000):
        block = f.read()
        if block is None:
            return out
        out.extend(block.data.splitlines())
    raise AssertionError("the follower never ran dry")


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def numbered(a: int, b: int) -> bytes:
    return b"".join(b"line %06d\n" % i for i in range(a, b))


def expected(a: int, b: int) -> list[bytes]:
    return numbered(a, b).splitlines()


class Writer:
    """Appends like nginx does: O_APPEND, one write() per line batch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def reopen(self) -> None:  # what nginx does on SIGUSR1 after a rename
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def close(self) -> None:
        os.close(self.fd)


def test_reads_from_the_start_and_holds_back_a_partial_last_line(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    w = Writer(log)
    w.write(numbered(0, 3) + b"line 0000")
    f = Follower(log, None)
    assert drain(f) == expected(0, 3)
    assert f.position.offset == len(numbered(0, 3))
    w.write(b"03\n")
    assert drain(f) == [b"line 000003"]
    f.close()
    w.close()


def test_a_log_that_does_not_exist_yet_is_read_once_it_appears(tmp_path: Path) -> None:
    log = tmp_path / "log" / "access.log"
    f = Follower(log, None)
    assert f.read() is None
    log.parent.mkdir()
    append(log, numbered(0, 5))
    assert drain(f) == expected(0, 5)
    f.close()


def test_a_checkpoint_resumes_exactly_where_it_was(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    append(log, numbered(0, 10))
    f = Follower(log, None, chunk=40)  # small reads: the checkpoint lands mid-file
    block = f.read()
    block = f.read()
    assert block is not None
    seen = block.data.splitlines()
    at = f.position
    f.close()
    g = Follower(log, at)
    assert seen + drain(g) == expected(0, 10)
    g.close()


def test_a_checkpoint_in_a_different_file_with_a_reused_inode_is_not_trusted(
    tmp_path: Path,
) -> None:
    log = tmp_path / "access.log"
    append(log, numbered(100, 110))
    ino = log.stat().st_ino
    warnings: list[str] = []
    f = Follower(
        log, Checkpoint(ino, 22, b"line 999998\nline 999999\n"[-22:]), warn=warnings.append
    )
    assert drain(f) == expected(100, 110)
    assert warnings and "from its start" in warnings[0]
    f.close()


def test_rotation_by_rename_loses_no_line_written_before_nginx_reopens(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    clock = Clock()
    w = Writer(log)
    w.write(numbered(0, 5))
    f = Follower(log, None, clock=clock)
    assert drain(f) == expected(0, 5)
    log.rename(tmp_path / "access.log.1")
    w.write(numbered(5, 8))  # nginx still writes to the renamed file until it reopens
    assert drain(f) == expected(5, 8)
    w.reopen()
    w.write(numbered(8, 12))
    assert drain(f) == []  # still within the grace period for late writes
    assert f.settling
    clock.now += 2
    assert drain(f) == expected(8, 12)
    assert not f.settling
    assert f.position.inode == log.stat().st_ino
    f.close()
    w.close()


def test_rotation_by_copytruncate_reads_the_unread_rest_from_the_copy(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    w = Writer(log)
    w.write(numbered(0, 5))
    f = Follower(log, None)
    assert drain(f) == expected(0, 5)
    w.write(numbered(5, 9))  # written, not yet read, when logrotate copies and truncates
    shutil.copyfile(log, tmp_path / "access.log.1")
    os.truncate(log, 0)
    w.write(numbered(9, 11))
    assert drain(f) == expected(5, 11)
    f.close()
    w.close()


def test_copytruncate_is_noticed_even_after_the_log_outgrew_the_old_offset(
    tmp_path: Path,
) -> None:
    log = tmp_path / "access.log"
    w = Writer(log)
    w.write(numbered(0, 5))
    f = Follower(log, None)
    assert drain(f) == expected(0, 5)
    w.write(numbered(5, 6))
    shutil.copyfile(log, tmp_path / "access.log.1")
    os.truncate(log, 0)
    w.write(numbered(1000, 1020))  # now longer than where the follower stood
    assert drain(f) == expected(5, 6) + expected(1000, 1020)
    f.close()
    w.close()


def test_a_restart_after_rename_rotation_finishes_the_rotated_file_first(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    w = Writer(log)
    w.write(numbered(0, 10))
    f = Follower(log, None, chunk=50)
    first = f.read()
    first = f.read()
    assert first is not None
    at = f.position
    f.close()  # the watcher dies here
    log.rename(tmp_path / "access.log.1")
    w.reopen()
    w.write(numbered(10, 15))
    clock = Clock()
    g = Follower(log, at, clock=clock)
    got = first.data.splitlines() + drain(g)
    clock.now += 2
    got += drain(g)
    assert got == expected(0, 15)
    g.close()
    w.close()


def test_a_restart_after_copytruncate_finishes_the_copy_first(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    w = Writer(log)
    w.write(numbered(0, 10))
    f = Follower(log, None, chunk=50)
    first = f.read()
    first = f.read()
    assert first is not None
    at = f.position
    f.close()
    shutil.copyfile(log, tmp_path / "access.log.1")
    os.truncate(log, 0)
    w.write(numbered(10, 40))
    g = Follower(log, at)
    assert first.data.splitlines() + drain(g) == expected(0, 40)
    g.close()
    w.close()


def test_compressed_rotations_are_not_mistaken_for_the_log(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    w = Writer(log)
    w.write(numbered(0, 4))
    f = Follower(log, None)
    drain(f)
    shutil.copyfile(log, tmp_path / "access.log.1.gz")  # same bytes, but not a log to read
    os.truncate(log, 0)
    w.write(numbered(4, 6))
    assert drain(f) == expected(4, 6)
    f.close()
    w.close()


def test_an_oversize_line_is_skipped_and_counted_and_memory_stays_bounded(
    tmp_path: Path,
) -> None:
    log = tmp_path / "access.log"
    w = Writer(log)
    w.write(numbered(0, 2) + b"x" * 300_000 + b"\n" + numbered(2, 4))
    f = Follower(log, None, chunk=4096, max_line=100_000)
    lines: list[bytes] = []
    oversize = 0
    biggest = 0
    while (block := f.read()) is not None:
        lines += block.data.splitlines()
        oversize += block.oversize
        biggest = max(biggest, len(block.data))
    assert lines == expected(0, 2) + expected(2, 4)
    assert oversize == 1
    assert biggest <= 100_001
    f.close()
    w.close()


def test_a_1mb_line_and_nul_bytes_come_through_whole(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    w = Writer(log)
    big = b"{" + b"a" * 1_000_000 + b"}"
    w.write(big + b"\n" + b"\0" * 5000 + b"after nuls\n")
    f = Follower(log, None)
    assert drain(f) == [big, b"\0" * 5000 + b"after nuls"]
    f.close()
    w.close()


def test_changes_wake_on_an_append_and_leave_no_thread(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"")
    before = threading.active_count()
    with Changes(log) as changes:
        changes.wait(0)  # clear anything pending
        t0 = time.monotonic()
        timer = threading.Timer(0.1, lambda: append(log, b"x\n"))
        timer.start()
        assert changes.wait(5.0)
        assert time.monotonic() - t0 < 2.0
        timer.join()
        assert not changes.wait(0.05)  # nothing else happened: no busy wake-ups
    assert threading.active_count() == before


def test_changes_for_a_directory_that_appears_later(tmp_path: Path) -> None:
    log = tmp_path / "later" / "access.log"
    with Changes(log) as changes:
        assert not changes.wait(0.01)
        log.parent.mkdir()
        assert not changes.wait(0.01)  # starts observing now
        append(log, b"x\n")
        assert changes.wait(5.0)


def test_two_renames_within_the_grace_period_skip_no_file(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    clock = Clock()
    w = Writer(log)
    w.write(numbered(0, 3))
    f = Follower(log, None, clock=clock)
    got = drain(f)
    for n, (a, b) in enumerate([(3, 6), (6, 9)], start=1):
        log.rename(tmp_path / f"access.log.{n}")
        w.reopen()
        w.write(numbered(a, b))
        got += drain(f)  # the successor is pinned, even if it is renamed away in turn
    for _ in range(3):
        clock.now += 2
        got += drain(f)
    assert got == expected(0, 9)
    f.close()
    w.close()
