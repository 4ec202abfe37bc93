"""The Python index end to end: a fake upstream (wheels built here), a real `withcache
sync` resolving with uv, the upstream stopped, then real pip and uv installing from
our nginx alone into fresh environments."""

from __future__ import annotations

import hashlib
import json
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from packaging.utils import canonicalize_name

from tests.conftest import Cache, run_withcache, start_nginx, stop_nginx
from tests.origin import Origin
from tests.pyindex_install import installed, pip_install, pip_venv, uv_install, uv_venv
from tests.pyindex_upstream import Dist, Upstream, build_wheel
from withcache import keys, manifest, pyindex, store
from withcache.errors import ManifestError
from withcache.layout import Layout
from withcache.manifest import Manifest
from withcache.pyindex import model, pages, resolve, select, targets
from withcache.pyindex.config import PythonConfig
from withcache.pyindex.model import IndexFile, Listed
from withcache.pyindex.resolve import Pin

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
PIP_ACCEPT = f"{JSON_TYPE}, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"


def fake_upstream() -> tuple[Upstream, dict[str, Dist]]:
    up = Upstream()
    d = {
        # a two-level chain, the top with PEP 658 metadata
        "alpha": up.add("wctest-alpha", "1.0", ["wctest-beta>=1"], pep658=True),
        "beta": up.add("WCTest_Beta", "1.0", ["wctest-gamma"]),
        "gamma": up.add("wctest-gamma", "1.0"),
        "gamma-yanked": up.add("wctest-gamma", "1.1", yanked="broken build"),
        # requires-python: 2.0 only for 3.12+, so 3.11 must get 1.0
        "delta1": up.add("wctest-delta", "1.0", requires_python=">=3.8"),
        "delta2": up.add("wctest-delta", "2.0", requires_python=">=3.12"),
        # platform wheels: only those two targets install are mirrored
        "n311": up.add("wctest-native", "1.0", tag="cp311-cp311-manylinux_2_17_x86_64"),
        "n312": up.add("wctest-native", "1.0", tag="cp312-cp312-manylinux_2_17_x86_64"),
        "n311new": up.add("wctest-native", "1.0", tag="cp311-cp311-manylinux_2_34_x86_64"),
        "nwin": up.add("wctest-native", "1.0", tag="cp311-cp311-win_amd64"),
        "nmusl": up.add("wctest-native", "1.0", tag="cp311-cp311-musllinux_1_2_x86_64"),
        # the upstream lists one sha256 and serves other bytes
        "liar": up.add("wctest-epsilon", "1.0", lie_about_hash=True),
    }
    return up, d


@dataclass
class Synced:
    cache: Cache
    dists: dict[str, Dist]
    sync_result: object
    tmp: Path
    private: tuple[str, bytes]

    def get(self, path: str, accept: str | None = None) -> requests.Response:
        headers = {"Accept": accept} if accept else {}
        return requests.get(self.cache.url + path, headers=headers, timeout=10)

    @property
    def index(self) -> str:
        return self.cache.url + "/simple/"


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synced]:
    """Sync once from a live upstream, stop it, then serve the data dir with nginx."""
    tmp = tmp_path_factory.mktemp("pyindex")
    tmp.chmod(0o755)  # nginx's workers (www-data when run as root) read the data dir
    up, dists = fake_upstream()
    wheelhouse = tmp / "wheelhouse"
    wheelhouse.mkdir()
    private = build_wheel("wctest-private", "0.1", ["wctest-gamma"])
    (wheelhouse / private[0]).write_bytes(private[1])
    origin = Origin()
    try:
        up.publish(origin)
        manifest = tmp / "python.yaml"
        manifest.write_text(
            textwrap.dedent(f"""\
            python:
              index: {origin.base}/json/simple/
              requirements:
                - wctest-alpha
                - wctest-delta
                - wctest-native
                - wctest-epsilon
                - wctest-private
                - "wctest-gamma==1.1; python_version >= '3.12'"  # mirrors the yanked one
              python: ["3.11", "3.12"]
              platforms: [manylinux_2_28_x86_64, any]
              wheelhouse: [wheelhouse]
            """)
        )
        result = run_withcache("sync", "--data", str(tmp / "data"), "-m", str(manifest))
    finally:
        origin.close()  # from here on, only our cache can serve anything
    cache = start_nginx(tmp / "data")
    try:
        yield Synced(cache, dists, result, tmp, private[:2])
    finally:
        stop_nginx(cache.proc)


def links(page: str) -> dict[str, str]:
    """filename -> the whole <a ...> tag."""
    return {m.group(2): m.group(0) for m in re.finditer(r"<a ([^>]*)>([^<]+)</a>", page)}


def test_sync_fails_the_file_whose_bytes_differ_and_lists_it_nowhere(synced: Synced) -> None:
    r = synced.sync_result
    assert r.returncode == 1, r.stderr  # type: ignore[attr-defined]
    liar = synced.dists["liar"].filename
    assert re.search(rf"fetch \S+/{re.escape(liar)} .*sha256 mismatch", r.stderr)  # type: ignore[attr-defined]
    assert "1 of " in r.stderr  # type: ignore[attr-defined]
    assert synced.get("/simple/wctest-epsilon/").status_code == 404
    root = synced.get("/simple/", JSON_TYPE).json()
    names = {p["name"] for p in root["projects"]}
    assert names == {
        "wctest-alpha", "wctest-beta", "wctest-gamma", "wctest-delta", "wctest-native",
        "wctest-private",
    }  # fmt: skip
    layout = Layout(synced.tmp / "data")
    conn = store.connect(layout.db)
    try:
        recorded = {a.name for a in store.artifacts(conn).values()}
    finally:
        conn.close()
    assert liar not in recorded


def test_only_the_files_the_targets_install_are_mirrored(synced: Synced) -> None:
    page = synced.get("/simple/wctest-native/", JSON_TYPE).json()
    got = {f["filename"] for f in page["files"]}
    assert got == {synced.dists["n311"].filename, synced.dists["n312"].filename}
    assert page["versions"] == ["1.0"]
    for f in page["files"]:
        assert f["size"] > 0 and len(f["hashes"]["sha256"]) == 64


def test_pip_installs_the_chain_from_the_cache_alone(synced: Synced, tmp_path: Path) -> None:
    py = pip_venv(tmp_path / "venv")
    r = pip_install(py, synced.index, "wctest-alpha", "wctest-delta", "wctest-native")
    assert r.returncode == 0, r.stdout + r.stderr
    assert installed(py) == {
        "wctest-alpha": "1.0",
        "wctest-beta": "1.0",
        "wctest-gamma": "1.0",  # 1.1 is newer, listed, and yanked: never picked
        "wctest-delta": "1.0",  # 2.0 requires Python 3.12
        "wctest-native": "1.0",
    }
    uris = [json.loads(line)["uri"] for line in synced.cache.log_lines()]
    assert any(u.endswith(".whl.metadata") for u in uris), "pip used PEP 658 metadata"


def test_uv_installs_from_the_cache_alone(synced: Synced, tmp_path: Path) -> None:
    py = uv_venv(tmp_path / "venv")
    r = uv_install(py, synced.index, tmp_path / "uv-cache", "wctest-alpha", "wctest-delta")
    assert r.returncode == 0, r.stderr
    assert installed(py) == {
        "wctest-alpha": "1.0",
        "wctest-beta": "1.0",
        "wctest-gamma": "1.0",
        "wctest-delta": "1.0",
    }


def test_installs_with_require_hashes(synced: Synced, tmp_path: Path) -> None:
    d = synced.dists
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(
        "".join(
            f"{d[k].project}=={d[k].version} --hash=sha256:{d[k].sha256}\n"
            for k in ("alpha", "beta", "gamma")
        )
    )
    want = {"wctest-alpha": "1.0", "wctest-beta": "1.0", "wctest-gamma": "1.0"}
    py = pip_venv(tmp_path / "pip")
    r = pip_install(py, synced.index, "--require-hashes", "-r", str(reqs))
    assert r.returncode == 0, r.stdout + r.stderr
    assert installed(py) == want
    py = uv_venv(tmp_path / "uv")
    r = uv_install(py, synced.index, tmp_path / "uv-cache", "--require-hashes", "-r", str(reqs))
    assert r.returncode == 0, r.stderr
    assert installed(py) == want


def test_a_wheelhouse_package_installs_with_its_dependencies(
    synced: Synced, tmp_path: Path
) -> None:
    py = pip_venv(tmp_path / "venv")
    r = pip_install(py, synced.index, "wctest-private")
    assert r.returncode == 0, r.stdout + r.stderr
    assert installed(py) == {"wctest-private": "0.1", "wctest-gamma": "1.0"}
    page = synced.get("/simple/wctest-private/").text
    digest = hashlib.sha256(synced.private[1]).hexdigest()
    assert f"#sha256={digest}" in page


def test_yanked_and_requires_python_are_preserved(synced: Synced) -> None:
    gamma = links(synced.get("/simple/wctest-gamma/").text)
    assert 'data-yanked="broken build"' in gamma[synced.dists["gamma-yanked"].filename]
    assert "data-yanked" not in gamma[synced.dists["gamma"].filename]
    delta = links(synced.get("/simple/wctest-delta/").text)
    assert 'data-requires-python="&gt;=3.12"' in delta[synced.dists["delta2"].filename]
    files = {
        f["filename"]: f for f in synced.get("/simple/wctest-gamma/", JSON_TYPE).json()["files"]
    }
    assert files[synced.dists["gamma-yanked"].filename]["yanked"] == "broken build"
    assert files[synced.dists["gamma"].filename]["yanked"] is False
    d2 = synced.get("/simple/wctest-delta/", JSON_TYPE).json()["files"]
    assert {f["requires-python"] for f in d2} == {">=3.8", ">=3.12"}


def test_pep658_metadata_is_served_beside_the_file(synced: Synced) -> None:
    alpha = synced.dists["alpha"]
    digest = hashlib.sha256(alpha.metadata).hexdigest()
    tag = links(synced.get("/simple/wctest-alpha/").text)[alpha.filename]
    assert f'data-core-metadata="sha256={digest}"' in tag
    assert f'data-dist-info-metadata="sha256={digest}"' in tag
    href = re.search(r'href="([^"#]+)#sha256=([0-9a-f]{64})"', tag)
    assert href and href.group(1).startswith("/b/") and href.group(2) == alpha.sha256
    assert synced.get(href.group(1)).content == alpha.body
    meta = synced.get(href.group(1) + ".metadata")
    assert meta.status_code == 200 and meta.content == alpha.metadata
    f = synced.get("/simple/wctest-alpha/", JSON_TYPE).json()["files"][0]
    assert f["core-metadata"] == {"sha256": digest} == f["dist-info-metadata"]
    beta = links(synced.get("/simple/wctest-beta/").text)[synced.dists["beta"].filename]
    assert "data-core-metadata" not in beta  # the upstream offered none for it


def test_a_plain_artifact_named_metadata_is_still_served(synced: Synced) -> None:
    url = synced.cache.plant("https://vendor.example/docs/pkg.metadata", b"plain artifact")
    assert requests.get(url, timeout=5).content == b"plain artifact"


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, "text/html"),
        (PIP_ACCEPT, JSON_TYPE),
        ("application/vnd.pypi.simple.v1+json, text/html;q=0.01", JSON_TYPE),
        ("application/vnd.pypi.simple.latest+json", JSON_TYPE),
        ("application/vnd.pypi.simple.v1+json;q=0.5", JSON_TYPE),
        ("text/html", "text/html"),
        ("application/vnd.pypi.simple.v1+html", "text/html"),
        ("text/html,application/xhtml+xml,*/*;q=0.8", "text/html"),
        ("application/vnd.pypi.simple.v1+json;q=0, text/html", "text/html"),
        ("text/html, application/vnd.pypi.simple.v1+json;q=0.5", "text/html"),
        ("*/*", "text/html"),
    ],
)
def test_accept_picks_the_format(synced: Synced, accept: str | None, content_type: str) -> None:
    for path in ("/simple/", "/simple/wctest-alpha/"):
        r = synced.get(path, accept)
        assert r.status_code == 200
        assert r.headers["Content-Type"] == content_type
        assert r.headers["Vary"] == "Accept"
        if content_type == JSON_TYPE:
            assert r.json()["meta"]["api-version"] == "1.1"
        else:
            assert r.text.startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(
    "path",
    [
        "/simple/WCTest_Alpha/",
        "/simple/wctest.alpha/",
        "/simple/WCTEST__ALPHA/",
        "/simple/wctest-_.Alpha/",
        "/simple/wctest--alpha/",
        "/simple/WCTEST-ALPHA/",
        "/simple/WCTEST_-_-.-ALPHA/",
        "/simple/wctest.alpha",
        "/simple/wctest-alpha",
        "/simple",
    ],
)
def test_other_spellings_of_a_name_still_work(synced: Synced, path: str) -> None:
    r = synced.get(path, PIP_ACCEPT)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == JSON_TYPE
    doc = r.json()
    assert doc.get("name", "wctest-alpha") == "wctest-alpha"


@pytest.mark.parametrize(
    "path",
    ["/simple/nope/", "/simple/No_Pe/", "/simple/wctest-alpha/index.html", "/simple/a%20b/"],
)
def test_unknown_projects_and_other_paths_are_404(synced: Synced, path: str) -> None:
    assert synced.get(path).status_code == 404
    assert requests.head(synced.cache.url + path, timeout=5).status_code == 404


@pytest.mark.parametrize("path", ["/simple/", "/simple/wctest-alpha/", "/b/x/a.whl.metadata"])
def test_the_index_is_read_only(synced: Synced, path: str) -> None:
    for method in ("POST", "PUT", "DELETE"):
        assert requests.request(method, synced.cache.url + path, timeout=5).status_code == 405


def test_resync_html_upstream_is_idempotent_and_prunes(tmp_path: Path) -> None:
    """PEP 503 HTML upstream, sdists too; a second sync fetches nothing and rewrites no
    page; a requirement removed with --prune takes its files and its page away; with
    the python: section gone, so is the index."""
    up = Upstream()
    alpha = up.add("wctest-alpha", "1.0", ["wctest-gamma"], pep658=True)
    up.add("wctest-gamma", "1.0")
    up.add("wctest-solo", "1.0")
    sdist = up.add_sdist("wctest-gamma", "1.0")
    origin = Origin()
    data = tmp_path / "data"
    manifest = tmp_path / "m.yaml"

    def sync(reqs: str, *extra: str) -> str:
        manifest.write_text(
            f"python:\n  index: {origin.base}/html/simple\n  requirements: [{reqs}]\n"
            '  python: ["3.11"]\n  platforms: [any]\n  sdists: true\n'
        )
        r = run_withcache("sync", "--data", str(data), "-m", str(manifest), *extra)
        assert r.returncode == 0, r.stderr
        return r.stderr

    try:
        up.publish(origin)
        out = sync("wctest-alpha, wctest-solo")
        assert "5 fetched" in out  # three wheels, one sdist, one metadata file
        gamma = (data / "www" / "simple" / "wctest-gamma" / "index.html").read_text()
        assert f">{sdist.filename}</a>" in gamma
        simple = data / "www" / "simple"
        page = (simple / "wctest-alpha" / "index.html").read_text()
        digest = hashlib.sha256(alpha.metadata).hexdigest()
        assert f'data-core-metadata="sha256={digest}"' in page
        mtimes = {p: p.stat().st_mtime_ns for p in simple.rglob("index.*")}
        out = sync("wctest-alpha, wctest-solo")
        assert "0 fetched" in out and "5 present" in out
        assert {p: p.stat().st_mtime_ns for p in simple.rglob("index.*")} == mtimes
        sync("wctest-alpha", "--prune")
        assert not (simple / "wctest-solo").exists()
        assert "wctest-solo" not in (simple / "index.html").read_text()
        layout = Layout(data)
        conn = store.connect(layout.db)
        try:
            names = {a.name for a in store.artifacts(conn).values()}
        finally:
            conn.close()
        assert not any("solo" in n for n in names)
        token = keys.token(keys.normalize(f"{origin.base}/files/{alpha.filename}"))
        assert (data / "www" / "b" / token / "@metadata").read_bytes() == alpha.metadata
        pyindex.write_index(Manifest(), layout)  # the python: section is gone
        assert not simple.exists() and not model.plan_path(layout).exists()
    finally:
        origin.close()


def test_resolution_failure_says_where_and_why(tmp_path: Path) -> None:
    origin = Origin()
    try:
        Upstream().publish(origin)
        manifest = tmp_path / "m.yaml"
        manifest.write_text(
            f"python:\n  index: {origin.base}/json/simple/\n  requirements: [wctest-nowhere]\n"
            '  python: ["3.11"]\n  platforms: [manylinux_2_28_x86_64]\n'
        )
        r = run_withcache("sync", "--data", str(tmp_path / "data"), "-m", str(manifest))
    finally:
        origin.close()
    assert r.returncode == 1
    assert f"{manifest}:3: python 3.11 on manylinux_2_28_x86_64: cannot resolve" in r.stderr
    assert "wctest-nowhere" in r.stderr


# ---------------------------------------------------------------- pure parts


def load_python(tmp: Path, text: str) -> PythonConfig:
    p = tmp / "m.yaml"
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    (cfg,) = manifest.load([p]).python
    assert isinstance(cfg, PythonConfig)
    return cfg


def python_problems(tmp: Path, text: str) -> list[str]:
    p = tmp / "m.yaml"
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    with pytest.raises(ManifestError) as exc:
        manifest.load([p])
    return [str(q).removeprefix(f"{p}:") for q in exc.value.problems]


def test_python_section_loads_with_defaults(tmp_path: Path) -> None:
    cfg = load_python(
        tmp_path,
        """
        python:
          requirements: [torch==2.5.1, "numpy>=2,<3", requests]
          python: [3.10, "3.12"]
          platforms: [manylinux_2_28_x86_64, any]
          wheelhouse: [private]
        """,
    )
    assert cfg.index == "https://pypi.org/simple/"
    assert [r.text for r in cfg.requirements] == ["torch==2.5.1", "numpy>=2,<3", "requests"]
    assert cfg.python == ("3.10", "3.12")  # the YAML text, not the float 3.1
    assert cfg.platforms == ("manylinux_2_28_x86_64", "any")
    assert not cfg.sdists
    assert cfg.wheelhouse == (tmp_path / "private",)  # relative to the manifest
    assert cfg.requirements_where == f"{tmp_path / 'm.yaml'}:2"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("python: [a]", ["1: python must be a mapping"]),
        ("python:\n  index: https://x/simple/", ["2: python: needs 'requirements', 'on_demand'"]),
        (
            "python:\n  requirements: [a]\n  colour: red",
            [
                "3: unknown key 'colour' in python",
                "2: python: needs 'python'",
                "2: python: needs 'platforms'",
            ],
        ),
        (
            "python:\n  index: ftp://x/\n  requirements: ['a >>> 1', 'b @ https://x/b.whl', a, a]"
            "\n  python: ['2.7', 3.11, 3.11]\n  platforms: [manylinux_2_28_s390x, solaris, any]"
            "\n  sdists: maybe\n  wheelhouse: w",
            [
                "2: python.index: 'url' must be an http(s) URL",
                "3: invalid requirement 'a >>> 1'",
                "3: 'b @ https://x/b.whl': direct URL requirements cannot be indexed",
                "3: duplicate requirement 'a'",
                "4: python.python: '2.7' is not a Python version",
                "4: python.python: duplicate '3.11'",
                "5: python.platforms: 'manylinux_2_28_s390x': the resolver supports Linux on",
                "5: python.platforms: 'solaris' is not a wheel platform tag",
                "6: sdists must be true or false",
                "7: python.wheelhouse must be a list",
            ],
        ),
        (
            "python:\n  index: https://user:pw@x/simple/\n  requirements: [a]\n  python: []\n"
            "  platforms: [any]",
            ["2: python.index: url contains credentials", "4: python.python must not be empty"],
        ),
    ],
)
def test_python_section_problems_are_located(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    got = python_problems(tmp_path, text)
    assert len(got) == len(expected), got
    for g, e in zip(got, expected, strict=True):
        assert g.startswith(e), (g, e)


def test_check_accepts_a_python_section(tmp_path: Path) -> None:
    p = tmp_path / "m.yaml"
    p.write_text("python:\n  requirements: [requests]\n  python: ['3.12']\n  platforms: [any]\n")
    r = run_withcache("check", str(p))
    assert r.returncode == 0, r.stderr


BASE = "https://up.example/simple/pkg/"
SHA_A = "a" * 64
SHA_M = "b" * 64


def test_parse_pep691_json() -> None:
    body = json.dumps(
        {
            "meta": {"api-version": "1.1"},
            "name": "pkg",
            "files": [
                {
                    "filename": "pkg-1.0-py3-none-any.whl",
                    "url": "../../files/pkg-1.0-py3-none-any.whl#frag",
                    "hashes": {"sha256": SHA_A.upper(), "md5": "x"},
                    "requires-python": ">=3.9",
                    "yanked": "bad",
                    "core-metadata": {"sha256": SHA_M},
                    "size": 10,
                    "upload-time": "2024-01-01T00:00:00Z",
                },
                {"filename": "pkg-0.9.tar.gz", "url": "https://cdn.example/pkg-0.9.tar.gz",
                 "hashes": {}, "dist-info-metadata": True, "yanked": True},
                {"filename": "pkg-0.8.tar.gz", "url": "pkg-0.8.tar.gz", "hashes": {},
                 "yanked": ""},
            ],
        }
    ).encode()  # fmt: skip
    a, b, c = pages.parse(body, "application/vnd.pypi.simple.v1+json", BASE)
    assert a == Listed(
        "pkg-1.0-py3-none-any.whl",
        "https://up.example/files/pkg-1.0-py3-none-any.whl",
        SHA_A,
        ">=3.9",
        "bad",
        SHA_M,
        10,
        "2024-01-01T00:00:00Z",
    )
    assert (b.sha256, b.metadata, b.yanked) == (None, True, True)
    assert (c.url, c.yanked) == (BASE + "pkg-0.8.tar.gz", True)


def test_parse_pep503_html() -> None:
    page = f"""<!DOCTYPE html><html><body>
      <a href="../../files/pkg-1.0-py3-none-any.whl#sha256={SHA_A}"
         data-requires-python="&gt;=3.9" data-yanked="" data-core-metadata="sha256={SHA_M}"
         >pkg-1.0-py3-none-any.whl</a>
      <a href="https://cdn.example/a/pkg%2B1-1.0.tar.gz#md5=abc"
         data-dist-info-metadata="true">x</a>
      <a href="pkg-0.1.zip" data-yanked="gone">pkg-0.1.zip</a>
      <a>no href</a>
    </body></html>"""
    a, b, c = pages.parse(page.encode(), "text/html; charset=utf-8", BASE)
    assert a == Listed(
        "pkg-1.0-py3-none-any.whl",
        "https://up.example/files/pkg-1.0-py3-none-any.whl",
        SHA_A,
        ">=3.9",
        True,
        SHA_M,
    )
    assert (b.filename, b.sha256, b.metadata) == ("pkg+1-1.0.tar.gz", None, True)
    assert (c.url, c.yanked, c.metadata) == (BASE + "pkg-0.1.zip", "gone", False)
    with pytest.raises(ValueError, match="not a simple-index page"):
        pages.parse(b"{}", "application/json", BASE)


@pytest.mark.parametrize(
    ("tag", "uv", "first", "includes", "excludes"),
    [
        (
            "manylinux_2_28_x86_64",
            "x86_64-manylinux_2_28",
            "manylinux_2_28_x86_64",
            ["manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"],
            ["manylinux_2_29_x86_64", "manylinux_2_28_aarch64"],
        ),
        ("manylinux_2_30_aarch64", "aarch64-manylinux_2_28", "manylinux_2_30_aarch64", [], []),
        ("manylinux2014_x86_64", "x86_64-manylinux2014", "manylinux_2_17_x86_64", [], []),
        ("musllinux_1_2_x86_64", "x86_64-unknown-linux-musl", "musllinux_1_2_x86_64",
         ["musllinux_1_0_x86_64"], ["manylinux_2_17_x86_64"]),
        ("macosx_11_0_arm64", "aarch64-apple-darwin", "macosx_11_0_arm64",
         ["macosx_10_16_universal2"], ["macosx_12_0_arm64"]),
        ("win_amd64", "x86_64-pc-windows-msvc", "win_amd64", [], []),
        ("any", None, "any", [], []),
    ],
)  # fmt: skip
def test_platform_tags(
    tag: str, uv: str | None, first: str, includes: list[str], excludes: list[str]
) -> None:
    assert targets.uv_platform(tag)[0] == uv
    got = targets.compatible_platforms(tag)
    assert got[0] == first
    assert set(includes) <= set(got) and not set(excludes) & set(got)


def test_targets_rank_wheels_like_installers() -> None:
    t = targets.Target("3.11", "manylinux_2_28_x86_64")
    files = [
        listed("pkg-1.0-py3-none-any.whl"),
        listed("pkg-1.0-cp311-abi3-manylinux_2_17_x86_64.whl"),
        listed("pkg-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"),
        listed("pkg-1.0-cp311-cp311-manylinux_2_34_x86_64.whl"),
        listed("pkg-1.0-cp312-cp312-manylinux_2_17_x86_64.whl"),
        listed("pkg-1.0.tar.gz"),
    ]
    assert select.best_wheel(files, t) == files[2]
    assert select.best_wheel(files[:2], t) == files[1]
    assert select.best_wheel(files[:1], t) == files[0]
    assert select.best_wheel(files[3:], t) is None
    pure = targets.Target("3.12", "any")
    assert select.best_wheel(files, pure) == files[0]
    yanked = [listed("pkg-1.0-cp311-cp311-linux_x86_64.whl", yanked=True), files[0]]
    assert select.best_wheel(yanked, t) == files[0]  # a yanked file only if nothing else fits
    assert targets.targets(("3.11", "3.12"), ("any", "win_amd64")) == [
        targets.Target("3.11", "win_amd64"),
        targets.Target("3.12", "win_amd64"),
    ]


def listed(filename: str, **kw: object) -> Listed:
    return Listed(filename, f"https://files.example/{filename}", SHA_A, **kw)  # type: ignore[arg-type]


def test_select_takes_one_wheel_per_target_plus_sdists_and_shields_private_names() -> None:
    t11 = targets.Target("3.11", "manylinux_2_28_x86_64")
    t12 = targets.Target("3.12", "manylinux_2_28_x86_64")
    pkg = [
        listed("pkg-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", metadata=SHA_M),
        listed("pkg-1.0-cp312-cp312-manylinux_2_17_x86_64.whl"),
        listed("pkg-1.0-cp311-cp311-win_amd64.whl"),
        listed("pkg-0.9-py3-none-any.whl"),
        listed("Pkg-1.0.tar.gz"),
    ]
    public_private = [listed("private-9.0-py3-none-any.whl")]
    local = IndexFile("private", "private-1.0-py3-none-any.whl", "k", "/w/x.whl", SHA_A, local=True)
    pins = {
        t11: [Pin(canonicalize_name("pkg"), "1.0"), Pin(canonicalize_name("private"), "1.0")],
        t12: [Pin(canonicalize_name("pkg"), "1.0.0"), Pin(canonicalize_name("gone"), "2")],
    }
    files, problems = select.select(
        pins, {"pkg": pkg, "private": public_private}, [local], sdists=True
    )
    names = [f.filename for f in files]
    assert names == [
        "Pkg-1.0.tar.gz",
        "pkg-1.0-cp311-cp311-manylinux_2_17_x86_64.whl",
        "pkg-1.0-cp312-cp312-manylinux_2_17_x86_64.whl",
        "private-1.0-py3-none-any.whl",
    ]
    meta = files[1]
    assert meta.metadata_key == keys.normalize(pkg[0].url + ".metadata")
    assert meta.metadata_sha256 == SHA_M
    assert problems == [
        "python 3.12 on manylinux_2_28_x86_64: gone==2 was resolved, but the upstream "
        "lists no file of it that fits"
    ]


def test_resolver_command_is_isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_INDEX_URL", "https://elsewhere.example/simple/")
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    up = "https://up.example/simple/"
    resolver = resolve.Resolver("uv", up, (Path("/w"),), False, Path("/c"))
    cmd, extra = resolver.command(targets.Target("3.12", "macosx_11_0_arm64"))
    assert "--no-config" in cmd and cmd[-2:] == ["--only-binary", ":all:"]
    assert cmd[cmd.index("--python-platform") + 1] == "aarch64-apple-darwin"
    assert cmd[cmd.index("--find-links") + 1] == "/w"
    env = resolve.clean_env(extra)
    assert env["MACOSX_DEPLOYMENT_TARGET"] == "11.0"
    assert not any(k.startswith(("UV_", "PIP_")) for k in env)
    assert resolve.parse_pins("a==1.0\nB_c==2.0 ; python_version >= '3'\n# x\n") == [
        Pin(canonicalize_name("a"), "1.0"),
        Pin(canonicalize_name("b-c"), "2.0"),
    ]
