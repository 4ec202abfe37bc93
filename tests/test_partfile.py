"""The partial file a download appends to: O_DIRECT where it can, buffered where
O_DIRECT cannot go (a body's unaligned end, a short write, an unaligned resume, a
refusing filesystem), and the same bytes on disk whichever way they went."""

from __future__ import annotations

import mmap
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.origin import Origin
from tests.test_sync import blob, manifest, sha, sync
from withcache.atomic import WRITE_PIECE, write_all
from withcache.fetch import ALIGN, CHUNK, _PartFile
from withcache.layout import Layout


def buffer_of(data: bytes) -> memoryview:
    """A page-aligned buffer holding `data`, as the downloads read into."""
    buf = mmap.mmap(-1, max(len(data), 1))
    buf[: len(data)] = data
    return memoryview(buf)[: len(data)]


def test_whole_buffers_go_direct_and_the_unaligned_end_goes_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each write the kernel sees, and whether it went direct: every whole block does,
    the body's last partial block alone does not."""
    body = os.urandom(2 * CHUNK + 3 * ALIGN + 1234)
    seen: list[tuple[int, bool]] = []
    out = _PartFile(tmp_path / "p.part", 0)
    real_write = os.write

    def watched(fd: int, data: memoryview) -> int:
        seen.append((len(data), out.direct))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", watched)
    try:
        assert out.direct
        out.write(buffer_of(body[:CHUNK]))
        out.write(buffer_of(body[CHUNK : 2 * CHUNK]))
        assert out.direct, "whole, aligned buffers stay direct"
        out.write(buffer_of(body[2 * CHUNK :]))
        assert not out.direct, "the body's last, unaligned bytes went buffered"
    finally:
        os.close(out.fd)
    monkeypatch.undo()
    assert (tmp_path / "p.part").read_bytes() == body
    assert seen == [(CHUNK, True), (CHUNK, True), (3 * ALIGN, True), (1234, False)]


def test_a_small_body_goes_buffered_in_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body that stays buffered reaches the page cache WRITE_PIECE bytes at a time at
    most: a 1 MiB write would ask the kernel for a 1 MiB folio (atomic.WRITE_PIECE)."""
    body = os.urandom(CHUNK + 5)
    sizes: list[int] = []
    real_write = os.write

    def watched(fd: int, data: memoryview) -> int:
        sizes.append(len(data))
        return real_write(fd, data)

    out = _PartFile(tmp_path / "p.part", 0, direct=False)
    monkeypatch.setattr(os, "write", watched)
    try:
        out.write(buffer_of(body))
    finally:
        os.close(out.fd)
    monkeypatch.undo()
    assert (tmp_path / "p.part").read_bytes() == body
    assert max(sizes) == WRITE_PIECE and sum(sizes) == len(body)


@settings(max_examples=40, deadline=None)
@given(
    st.binary(max_size=3 * WRITE_PIECE + 1).flatmap(
        lambda b: st.tuples(st.just(b), st.integers(1, 4 * WRITE_PIECE))
    )
)
def test_write_all_writes_everything_whatever_the_kernel_takes(case: tuple[bytes, int]) -> None:
    """write_all over a kernel that takes at most `cap` bytes per call: every byte lands,
    in order, and no call is handed more than WRITE_PIECE."""
    data, cap = case
    handed: list[int] = []
    real_write = os.write

    def short(fd: int, view: memoryview) -> int:
        handed.append(len(view))
        return real_write(fd, view[:cap])

    with tempfile.TemporaryFile() as f:
        os.write = short  # type: ignore[assignment]
        try:
            write_all(f.fileno(), data)
        finally:
            os.write = real_write
        f.seek(0)
        assert f.read() == data
    assert all(n <= WRITE_PIECE for n in handed)


def test_a_buffer_the_kernel_refuses_for_o_direct_is_written_buffered(tmp_path: Path) -> None:
    """An unaligned address with an aligned length: the kernel answers EINVAL to an
    O_DIRECT write, as a filesystem that took the flag at open may; nothing is lost."""
    raw = bytearray(os.urandom(ALIGN + 1))
    view = memoryview(raw)[1:]  # a bytearray's storage is not page-aligned, plus one
    out = _PartFile(tmp_path / "p.part", 0)
    try:
        out.write(view)
        assert not out.direct
    finally:
        os.close(out.fd)
    assert (tmp_path / "p.part").read_bytes() == bytes(raw[1:])


def test_a_resume_at_an_unaligned_offset_appends_buffered(tmp_path: Path) -> None:
    part = tmp_path / "p.part"
    head = os.urandom(ALIGN + 17)
    part.write_bytes(head)
    tail = os.urandom(CHUNK)
    out = _PartFile(part, len(head))
    try:
        assert not out.direct
        out.write(buffer_of(tail))
    finally:
        os.close(out.fd)
    assert part.read_bytes() == head + tail


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.one_of(st.integers(1, 3).map(lambda k: k * ALIGN), st.integers(1, 3 * ALIGN)),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from([0, ALIGN, 3 * ALIGN, 100]),
)
def test_any_sequence_of_writes_leaves_exactly_the_bytes_given(
    sizes: list[int], offset: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        part = Path(tmp) / "p.part"
        head = os.urandom(offset)
        part.write_bytes(head)
        chunks = [os.urandom(n) for n in sizes]
        out = _PartFile(part, offset)
        try:
            for c in chunks:
                out.write(buffer_of(c))
        finally:
            os.close(out.fd)
        assert part.read_bytes() == head + b"".join(chunks)


def test_a_large_body_syncs_and_resumes_exactly(
    origin: Origin, data: Layout, tmp_path: Path
) -> None:
    """End to end, over the direct path: a body of an unaligned size, dropped once
    mid-way, resumed with Range, and served byte for byte."""
    body = os.urandom(11 * CHUNK + 777)
    url = origin.add("/large.iso", body, drop_after=4 * CHUNK + 5, drop_times=1)
    m = manifest(tmp_path, [f"- url: {url}", f"  sha256: {sha(body)}"])
    assert sync(data, m, "--retries", "2") == 0
    ranges = [s.headers.get("Range") for s in origin.seen("/large.iso")]
    assert ranges[0] is None and (ranges[1] or "").startswith("bytes=")
    assert blob(data, url).read_bytes() == body
