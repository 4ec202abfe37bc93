"""The store: section and the disk budget's core: parsing, choosing victims, evicting."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import plant, run_withcache
from withcache import budget, manifest, store, tree
from withcache.errors import ManifestError
from withcache.layout import Layout
from withcache.storeconfig import Amount

GiB = 1 << 30


def load(tmp_path: Path, **files: str) -> manifest.Manifest:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return manifest.load([tmp_path])


# --- the store: section ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "budget_", "min_free", "max_size"),
    [
        ("budget: 500G\nmin_free: 5%\nmax_size: 64G", Amount(500 * GiB), Amount(percent=5), 64),
        ("budget: 80%", Amount(percent=80), None, None),
        ("min_free: 20G", None, Amount(20 * GiB), None),
        ("min_free: 0", None, Amount(0), None),
        ("budget: 1.5T\nmax_size: 512M", Amount(int(1.5 * 1024 * GiB)), None, 0.5),
    ],
)
def test_store_section_values(
    tmp_path: Path, text: str, budget_: Amount | None, min_free: Amount | None, max_size: float
) -> None:
    body = "store:\n" + "".join(f"  {line}\n" for line in text.splitlines())
    m = load(tmp_path, **{"a.yaml": body})
    (cfg,) = m.store
    assert (cfg.budget, cfg.min_free) == (budget_, min_free)
    assert cfg.max_size == (int(max_size * GiB) if max_size else None)
    assert cfg.where == f"{tmp_path / 'a.yaml'}:2"  # its first setting


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("budget: lots", "store.budget must be a size like 500G, 20G or 80%, got 'lots'"),
        ("budget: 0", "store.budget must be more than 0"),
        ("budget: 120%", "store.budget must be a percentage above 0 and at most 100%"),
        ("min_free: -5%", "store.min_free must be a percentage above 0 and at most 100%"),
        ("max_size: 50%", "store.max_size must be a size in bytes like 64G or 500M"),
        ("max_size: [1]", "store.max_size must be a size like 64G or 500M, got a list"),
        ("quota: 5G", "unknown key 'quota' in store (allowed: budget, max_size, min_free)"),
    ],
)
def test_bad_store_values_are_refused_at_their_line(
    tmp_path: Path, line: str, message: str
) -> None:
    (tmp_path / "a.yaml").write_text(f"artifacts: []\nstore:\n  {line}\n")
    r = run_withcache("check", str(tmp_path))
    assert r.returncode == 2
    assert f"{tmp_path / 'a.yaml'}:3: {message}" in r.stderr


def test_a_second_store_section_is_a_problem_at_its_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("store:\n  budget: 10G\n")
    (tmp_path / "b.yaml").write_text("artifacts: []\n\nstore:\n  min_free: 1G\n")
    with pytest.raises(ManifestError) as err:
        manifest.load([tmp_path])
    (problem,) = err.value.problems
    assert (problem.file, problem.line) == (str(tmp_path / "b.yaml"), 4)
    assert f"{tmp_path / 'a.yaml'}:2 already sets the store's limits" in problem.message
    r = run_withcache("sync", "--data", str(tmp_path / "d"), "-m", str(tmp_path))
    assert r.returncode == 2 and "b.yaml:4: a second store: section" in r.stderr
    assert not (tmp_path / "d").exists()  # a refused manifest changes nothing


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 1 << 50), unit=st.sampled_from(["", "K", "M", "G", "T", "KiB", "GB"]))
def test_any_written_size_parses_to_its_bytes(tmp_path_factory: object, n: int, unit: str) -> None:
    import yaml

    from withcache.storeconfig import parse
    from withcache.yamlnodes import Ctx

    ctx = Ctx("m.yaml")
    (cfg,) = parse(yaml.compose(f"budget: {n}{unit}\nmin_free: {n % 100 + 1}%"), ctx)
    power = {"": 0, "K": 1, "KiB": 1, "M": 2, "G": 3, "GB": 3, "T": 4}[unit]
    assert cfg.budget == Amount(n * 1024**power)
    assert cfg.min_free == Amount(percent=n % 100 + 1)
    assert cfg.min_free.of(1000) == (n % 100 + 1) * 10


# --- choosing victims (pure) -------------------------------------------------------------


def cands(*sizes: int) -> list[budget.Candidate]:
    return [budget.Candidate(f"k{i}", s, "auto", float(i)) for i, s in enumerate(sizes)]


def test_choose_takes_the_fewest_least_recently_used() -> None:
    lim = budget.Limits(budget=100)
    c = budget.choose(cands(10, 20, 30, 40), stored=110, free=1000, need=15, lim=lim)
    assert [v.key for v in c.victims] == ["k0", "k1"] and c.fits
    c = budget.choose(cands(10, 20), stored=120, free=1000, need=15, lim=lim)
    assert not c.fits and "over its budget" in c.why


def test_min_free_is_made_by_evicting_and_listed_budget_does_not_bind() -> None:
    lim = budget.Limits(budget=100, min_free=50)
    c = budget.choose(cands(10, 20, 30), stored=200, free=60, need=25, lim=lim, budget_binds=False)
    assert [v.key for v in c.victims] == ["k0", "k1"] and c.fits  # free 60+30-25 >= 50
    c = budget.choose(cands(5), stored=200, free=60, need=25, lim=lim, budget_binds=False)
    assert not c.fits and "under min_free" in c.why


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 1000), max_size=30),
    stored_extra=st.integers(0, 5000),
    free=st.integers(0, 5000),
    need=st.integers(0, 2000),
    cap=st.one_of(st.none(), st.integers(0, 20000)),
    min_free=st.integers(0, 3000),
)
def test_choose_is_a_minimal_lru_prefix(
    sizes: list[int], stored_extra: int, free: int, need: int, cap: int | None, min_free: int
) -> None:
    c_list = cands(*sizes)
    stored = sum(sizes) + stored_extra
    lim = budget.Limits(budget=cap, min_free=min_free)
    c = budget.choose(c_list, stored=stored, free=free, need=need, lim=lim)
    assert c.victims == c_list[: len(c.victims)]

    def ok(k: int) -> bool:
        freed = sum(sizes[:k])
        within = cap is None or stored - freed + need <= cap
        return within and free + freed - need >= min_free

    assert c.fits == ok(len(c.victims))
    if c.fits:
        assert not any(ok(k) for k in range(len(c.victims)))
    else:
        assert len(c.victims) == len(c_list)


# --- evicting -----------------------------------------------------------------------------


def hit(layout: Layout, key: str, when: float) -> None:
    conn = store.connect(layout.db)
    with store.transaction(conn):
        conn.execute("INSERT OR REPLACE INTO hits VALUES (?, 1, 0, ?)", (key, when))
    conn.close()


def test_eviction_takes_least_recently_used_unlisted_and_records_it(data: Layout) -> None:
    listed = plant(data, "https://vendor.example/listed.bin", b"L" * 1000)
    pinned_auto = plant(data, "https://dl.example/now-listed.bin", b"N" * 1000, source="auto")
    upload = plant(data, "https://wheelhouse.invalid/x/up.whl", b"U" * 1000, source="upload")
    autos = [
        plant(data, f"https://dl.example/a{i}.bin", b"a" * 1000, source="auto") for i in range(4)
    ]
    od = plant(data, "https://files.example/p.whl", b"p" * 1000, source="ondemand")
    for i, k in enumerate([*autos, od]):
        hit(data, k, 2_000_000_000 + i)  # a0 least recently hit ... od most
    hit(data, autos[0], 2_000_000_100)  # a0 hit again: now the most recent
    lim = budget.Limits(budget=4000)  # 8 x 1000 stored
    done = budget.enforce(data, lim, listed={pinned_auto})
    assert [e.key for e in done.evicted] == [autos[1], autos[2], autos[3], od]
    conn = store.connect(data.db)
    left = set(store.artifacts(conn))
    assert left == {listed, pinned_auto, upload, autos[0]}
    for e in done.evicted:
        assert tree.stat_blob(data, e.key) is None
    assert store.counters(conn)["evictions"] == 4
    rows = budget.recent_evictions(conn, None)
    assert [r["url"] for r in rows][-1] == "https://dl.example/a1.bin"
    assert rows[0]["reason"] == "budget" and rows[0]["source"] == "ondemand"
    conn.close()
    assert done.over == 0


def test_ensure_room_refuses_without_evicting_when_it_cannot_fit(data: Layout) -> None:
    plant(data, "https://vendor.example/listed.bin", b"L" * 3000)
    auto = plant(data, "https://dl.example/a.bin", b"a" * 1000, source="auto")
    lim = budget.Limits(budget=4500)
    with pytest.raises(budget.NoRoom, match="over its budget"):
        budget.ensure_room(data, 2000, lim)
    assert tree.stat_blob(data, auto) is not None  # nothing evicted for a refusal
    assert [e.key for e in budget.ensure_room(data, 1000, lim)] == [auto]
    # a listed download: the budget makes room but never refuses
    assert budget.ensure_room(data, 9000, lim, budget_binds=False) == []


def test_du_shows_bytes_by_source_and_the_evictable_part(tmp_path: Path, data: Layout) -> None:
    plant(data, "https://vendor.example/a.bin", b"m" * 3000)
    plant(data, "https://dl.example/b.bin", b"a" * 2000, source="auto")
    listed_auto = plant(data, "https://dl.example/c.bin", b"c" * 500, source="auto")
    m = tmp_path / "m.yaml"
    m.write_text(f"artifacts:\n  - {listed_auto}\nstore:\n  budget: 5000\n  min_free: 1%\n")
    r = run_withcache("du", "--data", str(data.root), "-m", str(m), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    by = {s["source"]: s for s in doc["sources"]}
    assert by["manifest"] == {"source": "manifest", "artifacts": 1, "bytes": 3000, "evictable": 0}
    assert by["auto"]["bytes"] == 2500 and by["auto"]["evictable"] == 2000
    assert doc["evictable"] == 2000 and doc["budget"] == 5000 and doc["bytes"] == 5500
    assert doc["filesystem"]["free"] > 0 and doc["min_free"] > 0
    r = run_withcache("du", "--data", str(data.root), "-m", str(m))
    assert "auto" in r.stdout and "budget: 4.9 KiB (500 B over)" in r.stdout


def test_evicting_an_on_demand_file_takes_it_off_the_index_pages(data: Layout) -> None:
    from withcache.pyindex import demand, publish
    from withcache.pyindex.model import IndexFile

    files = []
    for project, body in (("od-old", b"old wheel" * 100), ("od-new", b"new wheel" * 100)):
        name = f"{project.replace('-', '_')}-1.0-py3-none-any.whl"
        url = f"https://files.example/{name}"
        key = plant(data, url, body, source="ondemand")
        files.append(IndexFile(project, name, key, url, hashlib.sha256(body).hexdigest()))
        hit(data, key, 2_000_000_000 + len(files))  # od-old is the least recently used
    taken = {
        f.project: demand.Taken(
            f.project, "https://pypi.example/simple/", "m.yaml:1", 1.0, 0.0, [f]
        )
        for f in files
    }
    demand.save(data, demand.Demand(taken))
    with publish.held(data):
        publish.render_projects(data, ["od-old", "od-new"])
    simple = data.www / "simple"
    assert files[0].filename in (simple / "od-old" / "index.html").read_text()
    done = budget.enforce(data, budget.Limits(budget=900))
    assert [e.key for e in done.evicted] == [files[0].key]
    assert not (simple / "od-old").exists()  # its only file went: so did its page
    assert "od-old" not in (simple / "index.html").read_text()
    assert files[1].filename in (simple / "od-new" / "index.html").read_text()
