"""`withcache misses import`: a replica's misses merged at the center, idempotently.

The replica's misses come from a real watcher reading nginx-format log lines, and
travel as the real `withcache misses --json` output."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import plant, run_withcache
from withcache import keys, misses, missimport, store
from withcache.cli import main
from withcache.layout import Layout

T0 = 1_790_000_000.0


def log_line(
    uri: str,
    status: int = 404,
    method: str = "HEAD",
    addr: str = "10.0.0.1",
    at: float = T0,
    ua: str = "withcache-probe",
) -> str:
    stamp = datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
    return json.dumps(
        {
            "time": stamp,
            "addr": addr,
            "method": method,
            "uri": uri,
            "status": status,
            "bytes": 0,
            "ua": ua,
            "range": "",
            "rt": 0.0,
        },
        separators=(",", ":"),
    )


def miss_uri(url: str) -> str:
    return keys.cache_path(keys.normalize(url))


def watch(data: Path, *lines: str) -> None:
    """Append lines to DATA/log/access.log and let the real watcher read them."""
    log = data / "log" / "access.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.writelines(line + "\n" for line in lines)
    r = run_withcache("watch", "--once", "--index-every", "0", "--data", str(data))
    assert r.returncode == 0, r.stderr


def export(data: Path, path: Path, *extra: str) -> Path:
    r = run_withcache("misses", "--json", "--all", *extra, "--data", str(data))
    assert r.returncode == 0, r.stderr
    path.write_text(r.stdout)
    return path


def open_misses(data: Path) -> dict[str, tuple[int, int]]:
    """url -> (count, clients) of the misses awaiting review."""
    conn = store.connect(Layout(data).db)
    try:
        return {m.url: (m.count, m.clients) for m in misses.listing(conn, Layout(data).www)}
    finally:
        conn.close()


def table_dump(data: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(Layout(data).db) as conn:
        rows = []
        for table in ("misses", "miss_clients", "miss_imports"):
            rows += [(table, *r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2")]
        return rows


WANTED = "https://vendor.example/cuda_12.6.3_linux.run"
OTHER = "https://firmware.example/fw-2.bin"


def test_a_replicas_misses_are_merged_once_and_then_only_their_growth(tmp_path: Path) -> None:
    replica, center = tmp_path / "replica", tmp_path / "center"
    Layout(center).ensure()
    watch(
        replica,
        log_line(miss_uri(WANTED), addr="10.0.0.1"),
        log_line(miss_uri(WANTED), addr="10.0.0.2", method="GET", at=T0 + 60),
        log_line(miss_uri(OTHER), addr="10.0.0.1"),
        log_line("/simple/Torch_Vision/", addr="10.0.0.3", method="GET"),
        log_line("/m/gentoo/distfiles/ab/foo-1.0.tar.gz", addr="10.0.0.5"),
    )
    watch(center, log_line(miss_uri(WANTED), addr="192.168.1.9", at=T0 - 60))
    first = export(replica, tmp_path / "replica-1.json")
    rows = json.loads(first.read_text())
    assert {r["source"] for r in rows} == {rows[0]["source"]} and rows[0]["source"]

    r = run_withcache("misses", "import", str(first), "--data", str(center))
    assert r.returncode == 0, r.stderr
    assert "4 misses from" in r.stderr and "3 new here, 5 requests added" in r.stderr
    merged = open_misses(center)
    assert merged[WANTED] == (3, 3)  # 1 here + 2 there; 1 client here + 2 there
    assert merged[OTHER] == (1, 1)
    assert merged["torch-vision"] == (1, 1)
    assert merged["/m/gentoo/distfiles/ab/foo-1.0.tar.gz"] == (1, 1)

    # the same file again, and again from stdin: nothing changes
    before = table_dump(center)
    assert run_withcache("misses", "import", str(first), "--data", str(center)).returncode == 0
    r = run_withcache("misses", "import", "-", "--data", str(center), input=first.read_text())
    assert r.returncode == 0 and "0 requests added" in r.stderr, r.stderr
    assert table_dump(center) == before

    # the replica sees more; the next export adds only what is new
    watch(replica, log_line(miss_uri(WANTED), addr="10.0.0.4", at=T0 + 120))
    second = export(replica, tmp_path / "replica-2.json")
    assert run_withcache("misses", "import", str(second), "--data", str(center)).returncode == 0
    assert open_misses(center)[WANTED] == (4, 4)
    # an older file after a newer one adds nothing
    assert run_withcache("misses", "import", str(first), "--data", str(center)).returncode == 0
    assert open_misses(center)[WANTED] == (4, 4)
    # the center's own watcher keeps counting on top (clients include the imported ones)
    watch(center, log_line(miss_uri(WANTED), addr="192.168.1.10", at=T0 + 180))
    assert open_misses(center)[WANTED] == (5, 5)
    conn = store.connect(Layout(center).db)
    try:
        (row,) = [m for m in misses.listing(conn) if m.url == WANTED]
    finally:
        conn.close()
    assert (row.first_seen, row.last_seen) == (T0 - 60, T0 + 180)


def test_review_decisions_at_the_center_stand(tmp_path: Path) -> None:
    replica, center = tmp_path / "replica", tmp_path / "center"
    Layout(center).ensure()
    watch(replica, log_line(miss_uri(WANTED)), log_line(miss_uri(OTHER)))
    plant(Layout(center), OTHER, b"firmware")  # the center holds this one already
    r = run_withcache("misses", "dismiss", WANTED, "--data", str(center))
    assert r.returncode == 0, r.stderr
    f = export(replica, tmp_path / "r.json")
    assert run_withcache("misses", "import", str(f), "--data", str(center)).returncode == 0
    assert open_misses(center) == {}  # dismissed stays dismissed, cached stays cached


def test_a_data_dirs_own_export_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "center"
    watch(data, log_line(miss_uri(WANTED)))
    f = export(data, tmp_path / "own.json")
    before = table_dump(data)
    r = run_withcache("misses", "import", str(f), "--data", str(data))
    assert r.returncode == 2
    assert "own export" in r.stderr and "nothing was imported" in r.stderr
    assert table_dump(data) == before


def good_row(**changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "url": WANTED,
        "key": keys.normalize(WANTED),
        "kind": "url",
        "count": 3,
        "clients": 2,
        "first_seen": "2026-11-01T10:00:00Z",
        "last_seen": "2026-11-02T10:00:00Z",
        "last_ua": "curl/8",
        "source": "replica-b",
    }
    row.update(changes)
    return {k: v for k, v in row.items() if v is not None}


BAD = [
    ("{not json", "not JSON"),
    ('{"url": "x"}', "not a JSON array"),
    ("[1]", "row 1: not an object"),
    (json.dumps([good_row(source=None)]), "row 1: no valid 'source'"),
    (json.dumps([good_row(source="a b")]), "row 1: no valid 'source'"),
    (json.dumps([good_row(key="https://other.example/x")]), "row 1: 'key' is not the key of"),
    (json.dumps([good_row(url="ftp://vendor.example/x", key="ftp://vendor.example/x")]), "row 1:"),
    (
        json.dumps([good_row(url="https://u:p@vendor.example/a", key="https://vendor.example/a")]),
        "row 1: 'key' is not the key of",
    ),
    (json.dumps([good_row(count=-1)]), "row 1: 'count' must be a whole number"),
    (json.dumps([good_row(count=True)]), "row 1: 'count' must be a whole number"),
    (json.dumps([good_row(count="3")]), "row 1: 'count' must be a whole number"),
    (json.dumps([good_row(first_seen="yesterday")]), "row 1: 'first_seen' must be an ISO"),
    (json.dumps([good_row(last_seen="2026-11-02T10:00:00")]), "row 1: 'last_seen' must be"),
    (json.dumps([good_row(last_seen="2099-01-01T00:00:00Z")]), "row 1: first_seen/last_seen"),
    (json.dumps([good_row(kind="file")]), "row 1: 'kind' must be"),
    (
        json.dumps([good_row(kind="mirror", url="/m/g/x", key="mirror:g/../x")]),
        "row 1: not a mirror path miss",
    ),
    (json.dumps([good_row(kind="project", url="../x", key="python:../x")]), "not a Python"),
    (json.dumps([good_row(), good_row(count=None)]), "row 2: 'count' must be"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_files_are_refused_whole_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    center = Layout(tmp_path / "center").ensure()
    conn = store.connect(center.db)
    try:
        missimport.merge(conn, missimport.parse(json.dumps([good_row(source="x")]), "seed"))
    finally:
        conn.close()
    before = table_dump(center.root)
    f = tmp_path / "bad.json"
    f.write_text(text)
    assert main(["misses", "import", str(f), "--data", str(center.root)]) == 2
    err = capsys.readouterr().err
    assert f"withcache: error: {f}: " in err and message in err, err
    assert "nothing was imported" in err
    assert table_dump(center.root) == before


def test_bad_file_through_the_cli_changes_nothing(tmp_path: Path) -> None:
    center = tmp_path / "center"
    watch(center, log_line(miss_uri(OTHER)))
    before = table_dump(center)
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps([good_row()]))
    bad.write_text(json.dumps([good_row(count=-5)]))
    r = run_withcache("misses", "import", str(good), str(bad), "--data", str(center))
    assert r.returncode == 2
    assert f"{bad}: row 1: 'count'" in r.stderr
    assert table_dump(center) == before  # every file is checked before any is merged
    r = run_withcache("misses", "import", str(tmp_path / "nope.json"), "--data", str(center))
    assert r.returncode == 2 and "cannot read it" in r.stderr


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=20,
)
row_fields = st.fixed_dictionaries(
    {},
    optional={
        "url": st.sampled_from([WANTED, OTHER, "torch", "ftp://x/y"]) | st.text(max_size=20),
        "key": st.sampled_from([keys.normalize(WANTED), "python:torch"]) | st.text(max_size=20),
        "kind": st.sampled_from(["url", "project", "x"]),
        "count": st.integers(-2, 10**6) | st.booleans() | st.text(max_size=3),
        "clients": st.integers(-2, 10**6),
        "first_seen": st.sampled_from(["2026-01-01T00:00:00Z", "x", "2026-01-01T00:00:00"]),
        "last_seen": st.sampled_from(["2026-02-01T00:00:00Z", "2099-01-01T00:00:00+00:00"]),
        "last_ua": st.text(max_size=10) | st.integers(),
        "source": st.sampled_from(["a", "b", "", "a b"]) | st.text(max_size=5),
    },
)


@settings(max_examples=200, deadline=None)
@given(st.lists(row_fields, max_size=4) | json_values)
def test_any_document_is_either_rows_or_a_clear_refusal(doc: object) -> None:
    try:
        rows = missimport.parse(json.dumps(doc), "f.json")
    except missimport.ImportProblems as exc:
        assert str(exc).startswith("f.json: ")
        return
    for r in rows:
        assert r.count > 0 and 0 <= r.clients <= r.count and r.first_seen <= r.last_seen


valid_rows = st.lists(
    st.builds(
        good_row,
        url=st.sampled_from([WANTED, OTHER]),
        count=st.integers(1, 50),
        clients=st.integers(0, 50),
        source=st.sampled_from(["replica-a", "replica-b"]),
        last_seen=st.sampled_from(["2026-11-02T10:00:00Z", "2026-11-03T10:00:00Z"]),
    ).map(lambda r: dict(r, key=keys.normalize(str(r["url"])))),
    max_size=6,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(valid_rows)
def test_importing_twice_is_importing_once(tmp_path: Path, doc: list[dict[str, object]]) -> None:
    db = tmp_path / f"{abs(hash(json.dumps(doc)))}.db"
    conn = store.connect(db)
    try:
        rows = missimport.parse(json.dumps(doc), "f.json")
        missimport.merge(conn, rows)
        once = list(conn.execute("SELECT key, count, clients, first_seen, last_seen FROM misses"))
        missimport.merge(conn, rows)
        twice = list(conn.execute("SELECT key, count, clients, first_seen, last_seen FROM misses"))
        assert once == twice
        for key, count, _c, _f, _l in once:  # per source, the largest total counts
            per_source: dict[str, int] = {}
            for r in rows:
                if r.key == key:
                    per_source[r.source] = max(per_source.get(r.source, 0), r.count)
            assert count == sum(per_source.values())
    finally:
        conn.close()
        db.unlink()
