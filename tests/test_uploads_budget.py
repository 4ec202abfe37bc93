"""Uploads obey the store's budget like every other way bytes come in: an upload that
does not fit is refused with 507 before its body is stored, and nothing changes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_withcache
from tests.indexes_e2e import Served, snapshot, start, wheel

BUDGETED = """
store:
  budget: 2M
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = start(tmp_path_factory.mktemp("idx-budget"), extra_manifests={"store.yaml": BUDGETED})
    yield s
    s.stop()


def test_an_upload_over_the_budget_is_refused_before_it_is_stored(served: Served) -> None:
    small_name, small = wheel("fits", "1.0", payload=os.urandom(200 << 10))
    r = served.upload("team", small_name, small)
    assert r.status_code == 200, r.text
    before = snapshot(served.layout)
    big_name, big = wheel("toobig", "1.0", payload=os.urandom(3 << 20))
    r = served.upload("team", big_name, big)
    assert r.status_code == 507, r.text
    assert "no room" in r.text and "budget" in r.text
    assert snapshot(served.layout) == before
    assert not list(served.layout.partial.glob("upload-*.part"))


def test_publish_on_the_host_is_refused_the_same_way(served: Served, tmp_path: Path) -> None:
    name, body = wheel("alsotoobig", "1.0", payload=os.urandom(3 << 20))
    f = tmp_path / name
    f.write_bytes(body)
    before = snapshot(served.layout)
    r = run_withcache("publish", "--index", "team", str(f), "--data", str(served.layout.root))
    assert r.returncode == 1
    assert "no room" in r.stderr
    assert snapshot(served.layout) == before
