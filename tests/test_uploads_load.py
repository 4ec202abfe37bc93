"""Private indexes under load and under faults: a private name shadowing the mirror,
20 uploads at once while a sync runs (pages parsed on every fetch), definitions
changed under a running serve, and kill -9 of the upload service mid-upload."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests

from tests.indexes_e2e import MANIFEST, Served, start, sync, wheel
from tests.pyindex_install import installed, pip_install, pip_venv
from withcache import keys, store
from withcache.indexes import model

PYTHON = """
python:
  wheelhouse: [wheels]
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("load")
    wheels = tmp / "manifests-wheels"
    (tmp / "manifests").mkdir()
    for name, version in (("shadowed", "9.9"), ("mirroronly", "1.0")):
        fn, body = wheel(name, version)
        wheels.mkdir(exist_ok=True)
        (wheels / fn).write_bytes(body)
    (tmp / "manifests").rmdir()
    s = start(tmp, MANIFEST, extra_manifests={"python.yaml": PYTHON.replace("wheels", str(wheels))})
    yield s
    s.stop()


def get(
    served: Served, path: str, user: str = "alice", json_api: bool = False
) -> requests.Response:
    headers = {"Accept": "application/vnd.pypi.simple.v1+json"} if json_api else {}
    return requests.get(served.url + path, auth=served.auth(user), headers=headers, timeout=10)


def test_a_private_name_shadows_the_mirror_and_is_never_taken_from_it(
    served: Served, tmp_path: Path
) -> None:
    fn, body = wheel("shadowed", "1.0")
    assert served.upload("team", fn, body).status_code == 200
    root = get(served, "/team/simple/", json_api=True).json()
    assert {"shadowed", "mirroronly"} <= {p["name"] for p in root["projects"]}
    files = get(served, "/team/simple/shadowed/", json_api=True).json()["files"]
    assert [f["filename"] for f in files] == [fn]  # the mirror's 9.9 is not offered here
    mirror = requests.get(served.url + "/simple/shadowed/", timeout=5).text
    assert "shadowed-9.9" in mirror  # the mirror itself is unchanged
    assert get(served, "/team/simple/mirroronly/").status_code == 200
    assert get(served, "/team/simple/MirrorOnly").status_code in (200, 301)
    py = pip_venv(tmp_path / "v")
    r = pip_install(py, served.index_url("team", "alice"), "shadowed", "mirroronly")
    assert r.returncode == 0, r.stdout + r.stderr
    assert installed(py) == {"shadowed": "1.0", "mirroronly": "1.0"}


class PageCheck(HTMLParser):
    """A simple-index page, parsed: its links, and whether it ended where it should."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.closed = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.append(dict(attrs)["href"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "html":
            self.closed = True


def parse_page(r: requests.Response) -> list[str]:
    """Links of a page, or AssertionError when it is not whole."""
    assert r.status_code == 200, r.status_code
    if r.headers["Content-Type"].startswith("application/vnd.pypi.simple.v1+json"):
        doc = json.loads(r.content)
        return [p["name"] for p in doc.get("projects", [])] + [
            f["url"] for f in doc.get("files", [])
        ]
    page = PageCheck()
    page.feed(r.text)
    page.close()
    assert page.closed and r.text.endswith("</html>\n"), r.text[-80:]
    return page.links


def test_twenty_uploads_during_a_sync_all_listed_and_no_page_ever_half_written(
    served: Served,
) -> None:
    files = [wheel(f"burst{i % 10}", f"1.{i // 10}") for i in range(20)]
    done = threading.Event()
    problems: list[str] = []
    fetched = [0]

    def poll() -> None:
        session = requests.Session()
        session.auth = served.auth("alice")
        deadline = time.monotonic() + 120
        while not done.is_set() and time.monotonic() < deadline:
            for accept in ("text/html", "application/vnd.pypi.simple.v1+json"):
                try:
                    names = parse_page(
                        session.get(
                            served.url + "/team/simple/", headers={"Accept": accept}, timeout=10
                        )
                    )
                    for p in [n.strip("/") for n in names if n.strip("/").startswith("burst")][:3]:
                        parse_page(
                            session.get(
                                f"{served.url}/team/simple/{p}/",
                                headers={"Accept": accept},
                                timeout=10,
                            )
                        )
                        fetched[0] += 1
                except AssertionError as exc:
                    problems.append(str(exc))
                fetched[0] += 1

    def syncs() -> None:
        for _ in range(10):  # bounded: at most 10 syncs, stopped when the uploads are in
            sync(served.layout, served.manifests)
            if done.is_set():
                return

    poller = threading.Thread(target=poll)
    syncer = threading.Thread(target=syncs)
    poller.start()
    syncer.start()
    try:
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda f: served.upload("team", *f), files))
    finally:
        done.set()
        poller.join()
        syncer.join()
    assert [r.status_code for r in answers] == [200] * 20, [r.text for r in answers]
    assert not problems, problems[:3]
    assert fetched[0] > 20
    root = {p["name"] for p in get(served, "/team/simple/", json_api=True).json()["projects"]}
    assert {f"burst{i}" for i in range(10)} <= root
    for fn, body in files:
        project = fn.split("-")[0]
        listed = get(served, f"/team/simple/{project}/", json_api=True).json()["files"]
        (f,) = [f for f in listed if f["filename"] == fn]
        assert f["hashes"]["sha256"] == hashlib.sha256(body).hexdigest()
        assert get(served, f["url"]).content == body


def test_definitions_changed_under_a_running_serve_take_effect(served: Served) -> None:
    extra = served.manifests / "late.yaml"
    extra.write_text("indexes:\n  late:\n    write: [ci]\n")
    try:
        sync(served.layout, served.manifests)
        # The reload brings the index's locations: its root page (404 before), and its
        # upload location, which asks an anonymous POST for a password (405 before).
        # While nginx reloads, workers with the old config still take connections for
        # a moment, so wait until every answer is the new config's.
        steadily(
            lambda: (
                requests.post(served.url + "/late/", timeout=5).status_code == 401
                and requests.get(served.url + "/late/simple/", timeout=5).status_code == 200
            ),
            "nginx did not pick up the new index",
        )
        fn, body = wheel("latecomer", "1.0")
        assert served.upload("late", fn, body).status_code == 200
    finally:
        extra.unlink()
        sync(served.layout, served.manifests)
    steadily(
        lambda: requests.get(served.url + "/late/simple/", timeout=5).status_code == 404,
        "nginx still serves a removed index",
    )


def steadily(check: Callable[[], bool], failure: str, times: int = 10) -> None:
    """Wait (20 s at most) until `check()` holds `times` times in a row, each a new
    connection 50 ms apart: past the moment of a reload when old workers still answer."""
    deadline = time.monotonic() + 20
    streak = 0
    while streak < times:
        assert time.monotonic() < deadline, failure
        streak = streak + 1 if check() else 0
        time.sleep(0.05)


def child_pids(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def service_pids(served: Served) -> list[int]:
    """The upload service: the supervisor's child running upload-service, and its workers."""
    for pid in child_pids(served.proc.pid):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"upload-service" in cmd:
            return [pid, *child_pids(pid)]
    return []


def test_kill_9_of_the_upload_service_mid_upload_leaves_nothing_and_a_retry_works(
    served: Served,
) -> None:
    ix = model.Index("team", ("alice", "ci"), ("ci",))
    for attempt in range(3):  # the kill must land while the service is copying the body
        fn, body = wheel("bigone", f"1.{attempt}", payload=os.urandom(40 << 20))
        key = ix.key(hashlib.sha256(body).hexdigest(), fn)
        answer: list[object] = []
        t = threading.Thread(
            target=lambda a=answer, f=fn, b=body: a.append(_try_upload(served, f, b))
        )
        pids = service_pids(served)
        assert pids
        t.start()
        deadline = time.monotonic() + 60
        caught = False
        while t.is_alive() and time.monotonic() < deadline:
            if any(p.stat().st_size > 0 for p in served.layout.partial.glob("upload-*.part")):
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                caught = True
                break
            time.sleep(0.001)
        t.join()
        if caught:
            break
    assert caught, "the upload finished before the kill three times"
    assert get(served, "/team/simple/").status_code == 200  # reads never needed it
    assert answer[0] != 200  # the client saw an error (502 or a dropped connection)
    assert not (served.layout.www / keys.blob_relpath(key)).exists()
    conn = store.connect(served.layout.db)
    try:
        assert key not in store.artifacts(conn)
        assert not conn.execute("SELECT 1 FROM index_files WHERE filename = ?", (fn,)).fetchall()
    finally:
        conn.close()
    deadline = time.monotonic() + 30
    while (status := _try_upload(served, fn, body)) != 200:  # the supervisor restarts it
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert not list(served.layout.partial.glob("upload-*.part"))  # cleaned at restart
    assert get(served, "/team/simple/bigone/").text.count(fn) >= 1


def _try_upload(served: Served, fn: str, body: bytes) -> object:
    try:
        return served.upload("team", fn, body).status_code
    except requests.RequestException as exc:
        return type(exc).__name__


def test_serve_stops_the_upload_service_with_nginx(tmp_path: Path) -> None:
    s = start(tmp_path)
    pids = service_pids(s)
    assert pids and all(Path(f"/proc/{p}").exists() for p in pids)
    s.stop()
    assert s.proc.returncode == 0
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{p}").exists() for p in pids)
