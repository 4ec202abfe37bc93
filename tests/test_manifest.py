"""Manifests: every problem reported at its file:line, exit 2, nothing changed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT, run_withcache
from withcache import manifest
from withcache.errors import ManifestError

SHA = "a" * 64


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return p


def problems(*paths: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ManifestError) as exc:
        manifest.load(paths, env=env)
    return [str(p) for p in exc.value.problems]


def test_valid_manifest_loads_with_defaults_and_lines(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "m.yaml",
        f"""
        # comment
        defaults:
          keep_query: true
          headers:
            X-Team: lab
        artifacts:
          - https://Example.org/a.tgz?x=1
          - url: https://example.org/b.tgz
            sha256: {SHA.upper()}
            keep_query: false
            headers:
              Authorization: env:TOKEN
        """,
    )
    m = manifest.load([p])
    a, b = m.entries
    assert (a.key, a.line, a.keep_query) == ("https://example.org/a.tgz?x=1", 7, True)
    assert (b.key, b.line, b.sha256) == ("https://example.org/b.tgz", 8, SHA)
    assert {h.name: h.value for h in b.headers} == {"X-Team": "lab", "Authorization": "env:TOKEN"}
    assert manifest.resolve_headers(b, {"TOKEN": "s3cret"})["Authorization"] == "s3cret"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("artifacts:\n  - https://a.example/x\n  - [unclosed\n", "m.yaml:4: YAML syntax error"),
        ("artifacts:\n  - url: https://a.example/x\n    sha: 1\n", "m.yaml:3: unknown key 'sha'"),
        ("artefacts: []\n", "m.yaml:1: unknown key 'artefacts'"),
        ("artifacts:\n  - ftp://a.example/x\n", "m.yaml:2: 'url' must be an http(s) URL"),
        ("artifacts:\n  - a.example/x.tgz\n", "m.yaml:2: 'url' must be an http(s) URL"),
        ("artifacts:\n  - https://u:p@a.example/x\n", "m.yaml:2: url contains credentials"),
        (
            "artifacts:\n  - url: https://a.example/x\n    sha256: 12345\n",
            "m.yaml:3: sha256 must be 64 hex digits",
        ),
        (
            "artifacts:\n  - url: https://a.example/x\n    keep_query: yes please\n",
            "m.yaml:3: keep_query must be true or false",
        ),
        ("artifacts:\n  - sha256: " + SHA + "\n", "m.yaml:2: artifact entry has no 'url'"),
        (
            "artifacts:\n  - https://a.example/x\n  - https://a.example/x\n",
            "m.yaml:3: duplicate of https://a.example/x at",
        ),
        (
            "artifacts:\n  - https://a.example/x?v=1\n  - https://a.example/x?v=2\n",
            "m.yaml:3: key https://a.example/x collides with https://a.example/x?v=1",
        ),
        (
            "artifacts:\n  - url: https://a.example/x?v=1\n    keep_query: true\n"
            "  - https://a.example/x\n",
            "m.yaml:2: collides with https://a.example/x",
        ),
        ("artifacts: https://a.example/x\n", "m.yaml:1: 'artifacts' must be a list"),
        ("- https://a.example/x\n", "m.yaml:1: the manifest must be a mapping"),
        (
            "artifacts:\n  - url: https://a.example/x\n    headers:\n      Bad Name: v\n",
            "m.yaml:4: invalid header name 'Bad Name'",
        ),
    ],
)
def test_each_problem_has_its_line(tmp_path: Path, text: str, expected: str) -> None:
    p = write(tmp_path, "m.yaml", text)
    found = problems(p)
    assert any(f.startswith(f"{tmp_path}/{expected}") for f in found), found


def test_all_problems_reported_not_just_first(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "m.yaml",
        """
        artifacts:
          - ftp://a.example/x
          - url: https://a.example/y
            sha256: nope
          - url: https://a.example/z
            colour: blue
        """,
    )
    lines = [f.split(":")[1] for f in problems(p)]
    assert lines == ["2", "4", "6"]


def test_duplicates_across_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "artifacts:\n  - https://a.example/x\n")
    write(tmp_path, "b.yaml", "artifacts:\n  - https://A.example:443/x#frag\n")
    assert problems(tmp_path) == [
        f"{tmp_path}/b.yaml:2: duplicate of https://a.example/x at {tmp_path}/a.yaml:2 (same key)"
    ]


def test_env_headers_checked_only_at_sync_time(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "m.yaml",
        "artifacts:\n  - url: https://a.example/x\n    headers:\n      Authorization: env:NOPE\n",
    )
    manifest.load([p])  # check: fine
    assert problems(p, env={}) == [
        f"{p}:4: header Authorization: environment variable NOPE is unset"
    ]


def test_unquoted_digit_sha_is_read_as_text(tmp_path: Path) -> None:
    digits = "1" * 64
    p = write(
        tmp_path, "m.yaml", f"artifacts:\n  - url: https://a.example/x\n    sha256: {digits}\n"
    )
    assert manifest.load([p]).entries[0].sha256 == digits


def test_check_cli_exit_codes_and_output(tmp_path: Path) -> None:
    good = write(tmp_path, "good.yaml", "artifacts:\n  - https://a.example/x\n")
    r = run_withcache("check", str(good))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    r = run_withcache("check", "-v", str(good))
    assert r.returncode == 0 and "1 artifacts: ok" in r.stdout
    bad = write(tmp_path, "bad.yaml", "artifacts:\n  - ftp://a.example/x\n")
    r = run_withcache("check", str(bad))
    assert r.returncode == 2
    assert r.stderr.startswith(f"withcache: error: {bad}:2: 'url' must be an http(s) URL")


def test_bad_manifest_sync_changes_nothing(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", "artifacts:\n  - https://a.example/x\n  - nope\n")
    data = tmp_path / "data"
    r = run_withcache("sync", "--data", str(data), "-m", str(bad))
    assert r.returncode == 2 and f"{bad}:3:" in r.stderr
    assert not data.exists()


def test_shipped_manifests_pass_check() -> None:
    for path in ("manifests", "manifests/demo"):
        r = run_withcache("check", str(ROOT / path))
        assert r.returncode == 0, r.stderr


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_any_text_gives_problems_or_a_manifest_never_a_crash(text: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.yaml"
        p.write_text(text, encoding="utf-8")
        try:
            m = manifest.load([p])
        except ManifestError as exc:
            assert all(str(pr).startswith(str(p) + ":") for pr in exc.problems)
        else:
            assert all(e.key.startswith("http") for e in m.entries)
