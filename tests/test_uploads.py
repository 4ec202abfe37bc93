"""Private indexes end to end: real twine, uv publish, pip and uv against real nginx and
the real upload service (`withcache serve`), on loopback."""

from __future__ import annotations

import http.client
import io
import json
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import run_withcache
from tests.indexes_e2e import Served, snapshot, start, wheel
from tests.pyindex_install import (
    clean_env,
    installed,
    pip_install,
    pip_venv,
    run,
    uv_bin,
    uv_install,
    uv_venv,
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = start(tmp_path_factory.mktemp("idx"))
    yield s
    s.stop()


def twine(served: Served, index: str, user: str, *files: Path) -> subprocess.CompletedProcess[str]:
    return run(
        [
            sys.executable, "-m", "twine", "upload", "--disable-progress-bar", "--non-interactive",
            "--repository-url", f"{served.url}/{index}/", "-u", user, "-p", served.users[user],
            *map(str, files),
        ]
    )  # fmt: skip


def write(tmp: Path, filename: str, body: bytes) -> Path:
    p = tmp / filename
    p.write_bytes(body)
    return p


def test_twine_upload_then_pip_and_uv_install_with_credentials_in_the_url(
    served: Served, tmp_path: Path
) -> None:
    fn, body = wheel("teamtool", "1.0")
    r = twine(served, "team", "ci", write(tmp_path, fn, body))
    assert r.returncode == 0, r.stdout + r.stderr
    py = pip_venv(tmp_path / "pip")
    r = pip_install(py, served.index_url("team", "alice"), "teamtool")
    assert r.returncode == 0, r.stdout + r.stderr
    assert installed(py) == {"teamtool": "1.0"}
    uvpy = uv_venv(tmp_path / "uv")
    r = uv_install(uvpy, served.index_url("team", "ci"), tmp_path / "uvc", "teamtool")
    assert r.returncode == 0, r.stderr
    assert installed(uvpy) == {"teamtool": "1.0"}
    # without credentials: 401, and nothing installs
    assert requests.get(served.url + "/team/simple/teamtool/", timeout=5).status_code == 401
    r = pip_install(pip_venv(tmp_path / "anon"), served.index_url("team"), "teamtool")
    assert r.returncode != 0 and "401" in r.stdout + r.stderr


def test_uv_publish_then_install_with_netrc(served: Served, tmp_path: Path) -> None:
    fn, body = wheel("uvtool", "2.0")
    dist = tmp_path / "dist"
    dist.mkdir()
    write(dist, fn, body)
    r = run(
        [
            uv_bin(), "publish", "--no-config", "--publish-url", f"{served.url}/team/",
            "-u", "ci", "-p", served.users["ci"], str(dist / fn),
        ]
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login alice password {served.users['alice']}\n")
    netrc.chmod(0o600)
    env = dict(clean_env(), NETRC=str(netrc))
    py = pip_venv(tmp_path / "pip")
    r = subprocess.run(
        [
            sys.executable, "-m", "pip", "--python", str(py), "--isolated", "install",
            "--no-cache-dir", "--index-url", served.index_url("team"), "uvtool",
        ],
        capture_output=True, text=True, env=env, timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert installed(py) == {"uvtool": "2.0"}
    uvpy = uv_venv(tmp_path / "uv")
    r = subprocess.run(
        [
            uv_bin(), "pip", "install", "--no-config", "--python", str(uvpy),
            "--cache-dir", str(tmp_path / "uvc"), "--index-url", served.index_url("team"),
            "uvtool",
        ],
        capture_output=True, text=True, env=env, timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert installed(uvpy) == {"uvtool": "2.0"}


BACKEND = '''
"""A build backend that needs nothing installed: it zips the module into a wheel."""
import base64, hashlib, os, zipfile

NAME, VERSION = "slowbuild", "0.3"

def _h(b):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(b).digest()).decode().rstrip("=")

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    marker = os.environ.get("WITHCACHE_BUILD_MARKER")
    if marker:
        open(marker, "a").write("built\\n")
    info = f"{NAME}-{VERSION}.dist-info"
    files = {
        "slowbuild.py": open("slowbuild.py", "rb").read(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n"
        .encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\n"
        b"Tag: py3-none-any\\n",
    }
    record = "".join(f"{p},{_h(b)},{len(b)}\\n" for p, b in files.items()) + f"{info}/RECORD,,\\n"
    files[f"{info}/RECORD"] = record.encode()
    name = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for p, b in files.items():
            z.writestr(p, b)
    return name
'''


def sdist_only_package() -> tuple[str, bytes]:
    """slowbuild-0.3.tar.gz: an sdist that pip must build (with an in-tree backend)."""
    files = {
        "pyproject.toml": textwrap.dedent("""
            [build-system]
            requires = []
            build-backend = "backend"
            backend-path = ["."]
        """).encode(),
        "backend.py": BACKEND.encode(),
        "slowbuild.py": b"ANSWER = 42\n",
        "PKG-INFO": b"Metadata-Version: 2.1\nName: slowbuild\nVersion: 0.3\n",
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for path, data in files.items():
            info = tarfile.TarInfo(f"slowbuild-0.3/{path}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return "slowbuild-0.3.tar.gz", buf.getvalue()


def test_curdling_flow_build_once_upload_install_the_wheel_everywhere(
    served: Served, tmp_path: Path
) -> None:
    sname, sbody = sdist_only_package()
    sdist = write(tmp_path, sname, sbody)
    r = run_withcache("publish", "--index", "team", str(sdist), "--data", str(served.layout.root))
    assert r.returncode == 0, r.stderr
    # 1. a CI client builds the wheel from the sdist the index holds
    marker = tmp_path / "built"
    wheels = tmp_path / "wheels"
    env = dict(clean_env(), WITHCACHE_BUILD_MARKER=str(marker))
    r = subprocess.run(
        [
            sys.executable, "-m", "pip", "--isolated", "wheel", "--no-cache-dir", "--no-deps",
            "--no-binary", ":all:", "--index-url", served.index_url("team", "ci"),
            "-w", str(wheels), "slowbuild==0.3",
        ],
        capture_output=True, text=True, env=env, timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert marker.read_text() == "built\n"
    (built,) = wheels.glob("slowbuild-0.3-*.whl")
    # 2. and pushes it back
    r = twine(served, "team", "ci", built)
    assert r.returncode == 0, r.stdout + r.stderr
    # 3. another client installs binaries only; 4. nothing is built there
    marker.unlink()
    py = pip_venv(tmp_path / "client")
    r = subprocess.run(
        [
            sys.executable, "-m", "pip", "--python", str(py), "--isolated", "install",
            "--no-cache-dir", "--only-binary", ":all:", "--index-url",
            served.index_url("team", "alice"), "slowbuild",
        ],
        capture_output=True, text=True, env=env, timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert installed(py) == {"slowbuild": "0.3"}
    assert not marker.exists() and "Building wheel" not in r.stdout


def truncated(body: bytes) -> bytes:
    return body[: len(body) // 2]


def raw_post(served: Served, path: str, headers: dict[str, str], body: bytes = b"") -> int:
    host, port = served.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest("POST", path, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        if body:
            conn.send(body)
        return conn.getresponse().status
    finally:
        conn.close()


def basic(served: Served, user: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{served.users[user]}".encode()).decode()


def test_every_refusal_has_its_status_and_reason_and_changes_nothing(served: Served) -> None:
    good_name, good = wheel("refused", "1.0")
    r = served.upload("team", good_name, good)
    assert r.status_code == 200, r.text
    other_name, other = wheel("refused", "2.0")
    _, other_bytes_same_name = wheel("refused", "1.0", payload=b"different")
    cases: list[tuple[str, object, int, str]] = [
        ("no credentials", lambda: served.upload("team", other_name, other, user=None), 401, ""),
        (
            "wrong password",
            lambda: requests.post(
                served.url + "/team/",
                files={"content": (other_name, other)},
                auth=("ci", "nope"),
                timeout=30,
            ),
            401,
            "",
        ),
        ("unknown user", lambda: served.upload("team", other_name, other, user="bob"), 401, ""),
        ("reader", lambda: served.upload("team", other_name, other, user="alice"), 403, ""),
        (
            "not a wheel or sdist",
            lambda: served.upload("team", "notes.txt", b"hi", name="notes", version="1"),
            400,
            "not a wheel",
        ),
        (
            "name mismatch (form)",
            lambda: served.upload("team", other_name, other, name="something-else"),
            400,
            "name mismatch",
        ),
        (
            "version mismatch (form)",
            lambda: served.upload("team", other_name, other, version="3.0"),
            400,
            "version mismatch",
        ),
        (
            "version mismatch (filename vs metadata)",
            lambda: served.upload("team", "refused-9.0-py3-none-any.whl", other, version="9.0"),
            400,
            "version mismatch",
        ),
        (
            "truncated zip",
            lambda: served.upload("team", other_name, truncated(other)),
            400,
            "not a readable wheel",
        ),
        (
            "digest mismatch",
            lambda: served.upload("team", other_name, other, sha256_digest="0" * 64),
            400,
            "digest mismatch",
        ),
        (
            "same filename, other bytes",
            lambda: served.upload("team", good_name, other_bytes_same_name),
            409,
            "already exists",
        ),
        (
            "filename with a path",
            lambda: served.upload("team", "../" + other_name, other),
            400,
            "unsafe filename",
        ),
        (
            "filename with %2f",
            lambda: served.upload("team", "x%2f" + other_name, other),
            400,
            "unsafe filename",
        ),
        (
            "filename with NUL",
            lambda: served.upload("team", other_name[:-4] + "\0.whl", other),
            400,
            "unsafe filename",
        ),
    ]
    for what, send, status, reason in cases:
        before = snapshot(served.layout)
        r = send()  # type: ignore[operator]
        assert r.status_code == status, (what, r.status_code, r.text)
        if reason:  # twine shows the status line, uv the body
            assert reason in r.reason and reason in r.text, (what, r.reason, r.text)
        assert snapshot(served.layout) == before, what
    auth = {"Authorization": basic(served, "ci"), "Content-Type": "multipart/form-data; boundary=x"}
    for what, path, headers, status in [
        ("index name with %2f", "/te%2fam/", auth, 400),
        ("index name with ..", "/team/../team/x/..", auth, 400),
        ("index name with NUL", "/te%00am/", auth, 400),
        ("unknown index", "/nosuch/", auth, 405),
        ("over the size limit, refused before the body", "/team/",
         {**auth, "Content-Length": str(64 << 20 | 1)}, 413),
    ]:  # fmt: skip
        before = snapshot(served.layout)
        assert raw_post(served, path, headers) == status, what
        assert snapshot(served.layout) == before, what
    # identical bytes again succeed (a CI retry), and change no file
    before_files = snapshot(served.layout)[0]
    r = served.upload("team", good_name, good)
    assert r.status_code == 200 and "identical" in r.text
    assert snapshot(served.layout)[0] == before_files


def test_reads_are_per_index(served: Served) -> None:
    fn, body = wheel("opentool", "1.0")
    assert served.upload("pub", fn, body).status_code == 200
    page = requests.get(served.url + "/pub/simple/opentool/", timeout=5)
    assert page.status_code == 200  # pub: anyone reads
    href = page.text.split('href="')[1].split("#")[0]
    assert requests.get(served.url + href, timeout=5).content == body
    assert requests.get(served.url + href + ".metadata", timeout=5).content.startswith(b"Metadata")
    # a file of one index is not served under another, nor under /b/
    r = requests.get(served.url + href.replace("/pub/", "/team/", 1), auth=served.auth("ci"))
    assert r.status_code == 404
    assert requests.get(served.url + href.removeprefix("/pub"), timeout=5).status_code == 403
    r = requests.get(served.url + href.removeprefix("/pub") + ".metadata", timeout=5)
    assert r.status_code == 403  # nor its metadata
    # the reader and the writer of team read it; wrong password: 401
    for user, status in (("alice", 200), ("ci", 200), ("bob", 401)):
        r = requests.get(served.url + "/team/simple/", auth=served.auth(user), timeout=5)
        assert r.status_code == status, (user, r.text[:300])


def test_a_new_password_works_at_once_without_a_reload(served: Served) -> None:
    lay = str(served.layout.root)
    old = served.auth("alice")
    r = run_withcache("users", "passwd", "alice", "--data", lay, input="brand new pw\n")
    assert r.returncode == 0, r.stderr  # the default cost: the hash nginx checks via libxcrypt
    assert "$2b$10$" in (served.layout.state / "auth" / "team.read").read_text()
    new = ("alice", "brand new pw")
    try:
        assert requests.get(served.url + "/team/simple/", auth=new, timeout=5).status_code == 200
        assert requests.get(served.url + "/team/simple/", auth=old, timeout=5).status_code == 401
    finally:
        r = run_withcache(
            "users", "passwd", "alice", "--cost", "4", "--data", lay, input=old[1] + "\n"
        )
        assert r.returncode == 0, r.stderr
    r = run_withcache("users", "passwd", "nobody", "--data", lay, input="x\n")
    assert r.returncode == 2 and "no user 'nobody'" in r.stderr


def test_yank_and_unyank(served: Served, tmp_path: Path) -> None:
    for version in ("1.0", "1.1"):
        fn, body = wheel("yanky", version)
        assert served.upload("team", fn, body).status_code == 200
    lay = str(served.layout.root)
    r = run_withcache(
        "yank", "--index", "team", "Yanky", "1.1", "--reason", "broken", "--data", lay
    )
    assert r.returncode == 0, r.stderr
    page = requests.get(
        served.url + "/team/simple/yanky/",
        auth=served.auth("alice"),
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
        timeout=5,
    ).json()
    assert {f["filename"]: f["yanked"] for f in page["files"]} == {
        "yanky-1.0-py3-none-any.whl": False,
        "yanky-1.1-py3-none-any.whl": "broken",
    }
    py = pip_venv(tmp_path / "v")
    r = pip_install(py, served.index_url("team", "alice"), "yanky")
    assert r.returncode == 0 and installed(py) == {"yanky": "1.0"}, r.stdout + r.stderr
    r = run_withcache("yank", "--index", "team", "yanky", "1.1", "--undo", "--data", lay)
    assert r.returncode == 0, r.stderr
    html = requests.get(served.url + "/team/simple/yanky/", auth=served.auth("alice")).text
    assert "data-yanked" not in html
    r = run_withcache("yank", "--index", "team", "yanky", "7.0", "--data", lay)
    assert r.returncode == 1 and "no files of yanky 7.0" in r.stderr


def test_publish_runs_the_same_checks(served: Served, tmp_path: Path) -> None:
    fn, body = wheel("hosttool", "1.0")
    good = write(tmp_path, fn, body)
    bad = write(tmp_path, "hosttool-2.0-py3-none-any.whl", truncated(body))
    before = snapshot(served.layout)
    r = run_withcache("publish", "--index", "team", str(bad), "--data", str(served.layout.root))
    assert r.returncode == 1 and "not a readable wheel" in r.stderr
    assert snapshot(served.layout) == before
    r = run_withcache("publish", "--index", "team", str(good), "--data", str(served.layout.root))
    assert r.returncode == 0, r.stderr
    assert (
        "hosttool-1.0"
        in requests.get(served.url + "/team/simple/hosttool/", auth=served.auth("ci")).text
    )
    r = run_withcache("publish", "--index", "nope", str(good), "--data", str(served.layout.root))
    assert r.returncode == 2 and "no index named 'nope'" in r.stderr


def test_audit_is_in_report_catalog_and_index(served: Served) -> None:
    fn, body = wheel("audited", "1.0")
    assert served.upload("pub", fn, body).status_code == 200
    r = run_withcache("report", "--format", "json", "--peek", "--data", str(served.layout.root))
    assert r.returncode == 0, r.stderr
    uploads = json.loads(r.stdout)["uploads"]
    mine = [u for u in uploads if u["filename"] == fn]
    assert mine and mine[0]["user"] == "ci" and mine[0]["addr"] == "127.0.0.1"
    assert mine[0]["index"] == "pub" and mine[0]["size"] == len(body)
    r = run_withcache("index", "--data", str(served.layout.root))
    assert r.returncode == 0, r.stderr
    catalog = requests.get(served.url + "/catalog.json", timeout=5).json()
    assert any(u["filename"] == fn and u["user"] == "ci" for u in catalog["uploads"])
    paths = {a["name"]: a["cache_path"] for a in catalog["artifacts"]}
    for name in (fn, fn + ".metadata"):  # the catalog's links to them work
        assert requests.get(served.url + paths[name], timeout=5).status_code == 200, name
    assert not any(p.startswith("/team/") for p in paths.values())  # restricted: not listed
    assert fn in requests.get(served.url + "/", timeout=5).text
