"""/metrics: a static file the watcher and sync keep current, read back with the official
Prometheus client's parser; the counters must match what the test did."""

from __future__ import annotations

import json
import re
from pathlib import Path

import requests
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, Cache, plant, run_withcache
from tests.origin import Origin
from tests.test_misses_e2e import caught_up, wait_for
from tests.watcher import Watcher, checkpoint
from withcache import atomic, budget, keys, metrics

DEPLOY = ROOT / "withcache" / "deploy"


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} for every sample, as Prometheus reads them."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **lb: str
) -> float:
    return samples[(name, tuple(sorted(lb.items())))]


def test_counters_match_the_requests_and_nginx_serves_them(cache: Cache, tmp_path: Path) -> None:
    sizes = [1000, 70_000, 123_457]
    urls = [
        cache.plant(f"https://vendor.example/m/{i}.bin", bytes([i]) * n)
        for i, n in enumerate(sizes)
    ]
    w = Watcher(cache.data, cache.access_log, "--index-every", "0", "--metrics-every", "0.2")
    try:
        wait_for(lambda: checkpoint(cache.data, cache.access_log) is not None, 20)
        hits = [0, 1, 2, 2, 1]  # N = 5 GETs answered 200, B bytes
        for i in hits:
            assert requests.get(urls[i]).status_code == 200
        assert requests.head(urls[0]).status_code == 200  # a probe: not a hit
        missing = cache.url + keys.cache_path("https://vendor.example/none.bin")
        for _ in range(3):  # M = 3 misses
            assert requests.get(missing).status_code == 404
        assert requests.get(cache.url + "/simple/nothing-here/").status_code == 404
        wait_for(lambda: caught_up(cache), 20)

        def counted() -> bool:  # the watcher rewrites the file within 0.2 s of a commit
            got = requests.get(cache.url + "/metrics")
            if got.status_code != 200:
                return False
            s = parse(got.text)
            return (
                value(s, "withcache_hits_total", area="b") == len(hits)
                and value(s, "withcache_misses_total", area="b") == 3
                and value(s, "withcache_misses_total", area="simple") == 1
            )

        wait_for(counted, 20)
        got = requests.get(cache.url + "/metrics")
        assert got.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert got.headers["Cache-Control"] == "no-store"
        s = parse(got.text)
        assert value(s, "withcache_misses_total", area="b") == 3
        assert value(s, "withcache_served_bytes_total", area="b") == sum(sizes[i] for i in hits)
        assert value(s, "withcache_misses_total", area="simple") == 1
        assert value(s, "withcache_hits_total", area="simple") == 0
        assert value(s, "withcache_artifacts", source="manifest") == 3
        assert value(s, "withcache_stored_bytes", source="manifest") == sum(sizes)
        assert value(s, "withcache_evictable_bytes", source="manifest") == 0
        assert value(s, "withcache_filesystem_free_bytes") > 0
        log = str(cache.access_log.resolve())
        assert value(s, "withcache_watcher_lag_bytes", log=log) == 0
        assert value(s, "withcache_watcher_lag_seconds", log=log) == 0
    finally:
        assert w.term() == 0


def test_a_scrape_always_sees_the_latest_file(cache: Cache) -> None:
    """Every worker answers /metrics from the file as it is now, never from a descriptor
    it kept open: counters must not go backwards between two scrapes."""
    path = cache.layout.www / metrics.FILE
    atomic.write(path, b"withcache_log_lines_total 1\n")
    for _ in range(10):  # fresh connections: every worker opens the first file
        assert requests.get(cache.url + "/metrics", timeout=5).text.endswith(" 1\n")
    atomic.write(path, b"withcache_log_lines_total 2\n")
    seen = [requests.get(cache.url + "/metrics", timeout=5).text for _ in range(10)]
    assert seen == ["withcache_log_lines_total 2\n"] * 10


def test_sync_records_its_result_and_evictions_are_counted(tmp_path: Path, origin: Origin) -> None:
    good = origin.add("/good.bin", b"g" * 5000)
    bad = origin.add("/bad.bin", status=404)
    data = tmp_path / "d"
    m = tmp_path / "m.yaml"
    m.write_text(f"artifacts:\n  - {good}\n  - {bad}\n")
    assert run_withcache("sync", "-q", "--data", str(data), "-m", str(m)).returncode == 1
    s = parse((data / "www" / "metrics").read_text())
    assert value(s, "withcache_last_sync_success") == 0
    assert value(s, "withcache_last_sync_failures") == 1
    assert value(s, "withcache_last_sync_fetched") == 1
    assert value(s, "withcache_sync_failing_artifacts") == 1
    assert ("withcache_last_successful_sync_timestamp_seconds", ()) not in s
    m.write_text(f"artifacts:\n  - {good}\nstore:\n  budget: 10K\n  min_free: 1M\n")
    assert run_withcache("sync", "-q", "--data", str(data), "-m", str(m)).returncode == 0
    s = parse((data / "www" / "metrics").read_text())
    assert value(s, "withcache_last_sync_success") == 1
    assert value(s, "withcache_last_successful_sync_timestamp_seconds") == value(
        s, "withcache_last_sync_timestamp_seconds"
    )
    assert value(s, "withcache_budget_bytes") == 10 * 1024
    assert value(s, "withcache_min_free_bytes") == 1 << 20

    from withcache.layout import Layout

    lay = Layout(data)
    plant(lay, "https://dl.example/a.bin", b"a" * 7000, source="auto")
    assert len(budget.enforce(lay, budget.Limits(budget=10 * 1024)).evicted) == 1
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    r = run_withcache(
        "metrics", "--data", str(data), "-m", str(m), "--textfile-dir", str(textfiles)
    )
    assert r.returncode == 0, r.stderr
    s = parse((textfiles / "withcache.prom").read_text())
    assert value(s, "withcache_evictions_total") == 1
    assert value(s, "withcache_evicted_bytes_total") == 7000
    assert (textfiles / "withcache.prom").read_text() == (data / "www" / "metrics").read_text()


@settings(max_examples=200, deadline=None)
@given(label=st.text(max_size=40), v=st.integers(0, 1 << 53))  # float64, as Prometheus
def test_any_label_value_reads_back_unchanged(label: str, v: int) -> None:
    fam = metrics.Family("withcache_t", "gauge", "a test").add(v, log=label)
    (sample,) = next(text_string_to_metric_families(metrics.render([fam]))).samples
    assert sample.labels == {"log": label} and sample.value == v


def exposed_names(tmp_path: Path) -> set[str]:
    from withcache import history
    from withcache.layout import Layout

    lay = Layout(tmp_path / "d").ensure()
    history.record(lay, history.Run(1.0, 2.0, True))
    return {f.name for f in metrics.collect(lay, budget.Limits(budget=1))}


def test_alert_rules_and_dashboard_use_only_metrics_that_exist(tmp_path: Path) -> None:
    names = exposed_names(tmp_path)
    rules = yaml.safe_load((DEPLOY / "prometheus-alerts.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert set(alerts) == {"WithcacheDiskNearlyFull", "WithcacheSyncFailingOrStale"}
    board = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [r["expr"] for r in alerts.values()]
    exprs += [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    used = {n for e in exprs for n in re.findall(r"withcache_[a-z_]+", e)}
    assert used and used <= names, used - names


def test_each_area_is_counted_apart(tmp_path: Path) -> None:
    """/b/, /m/ and /simple/ hits, misses and bytes, from a log the watcher reads."""
    from tests.test_watch import nginx_line

    data, log = tmp_path / "data", tmp_path / "access.log"
    b_url = "/b/" + keys.token("https://vendor.example/a.bin") + "/a.bin"
    b_miss = "/b/" + keys.token("https://vendor.example/gone.bin") + "/gone.bin"
    m_url = "/m/gentoo/distfiles/ab/foo-1.0.tar.gz"
    log.write_bytes(
        nginx_line(b_url, 200, nbytes=100) * 2
        + nginx_line(b_miss, 404)
        + nginx_line(m_url, 200, nbytes=7000) * 3
        + nginx_line(m_url, 206, nbytes=50)
        + nginx_line("/m/gentoo/distfiles/cd/bar-2.0.tar.xz", 404) * 4
        + nginx_line("/simple/numpy/", 200, nbytes=900)
        + nginx_line("/simple/nothere/", 404)
    )
    r = run_withcache("watch", "--once", "--data", str(data), "--log", str(log))
    assert r.returncode == 0, r.stderr
    r = run_withcache("metrics", "--print", "--data", str(data))
    assert r.returncode == 0, r.stderr
    s = parse(r.stdout)
    expected = {
        ("withcache_hits_total", "b"): 2,
        ("withcache_hits_total", "m"): 4,
        ("withcache_hits_total", "simple"): 1,
        ("withcache_misses_total", "b"): 1,
        ("withcache_misses_total", "m"): 4,
        ("withcache_misses_total", "simple"): 1,
        ("withcache_served_bytes_total", "b"): 200,
        ("withcache_served_bytes_total", "m"): 21050,
        ("withcache_served_bytes_total", "simple"): 900,
    }
    assert {k: value(s, k[0], area=k[1]) for k in expected} == expected
