"""The `mirrors:` section, mirror paths and GLEP 75: pure, every problem at file:line."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import run_withcache
from withcache import keys, manifest
from withcache.errors import ManifestError
from withcache.mirrors import gentoo, paths

SHA = "a" * 64
B2 = "b" * 128


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return p


def problems(*files: Path) -> list[str]:
    with pytest.raises(ManifestError) as exc:
        manifest.load(files)
    return [str(p) for p in exc.value.problems]


def b2_dir(name: str) -> str:
    """GLEP 75's directory, computed here independently: BLAKE2B-512, first 8 bits."""
    return f"{hashlib.blake2b(name.encode()).digest()[0]:02x}"


def test_the_issue_example_loads_with_keys_urls_pins_and_lines(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "g.yaml",
        f"""
        mirrors:
          gentoo:
            sources:
              - https://distfiles.gentoo.org/
              - https://Mirror.example.edu/gentoo
            layout: gentoo
            files:
              - foo-1.2.tar.gz
              - path: distfiles/d5/bar-2.0.tar.xz
                sha256: {SHA}
                blake2b: {B2.upper()}
                size: 123
            auto: true
            fallthrough: true
        """,
    )
    (g,) = manifest.load([p]).mirrors
    assert (g.name, g.layout, g.auto, g.fallthrough, g.line) == ("gentoo", "gentoo", True, True, 2)
    assert g.sources == ("https://distfiles.gentoo.org/", "https://Mirror.example.edu/gentoo/")
    foo, bar = g.files
    assert foo.ref.path == f"distfiles/{b2_dir('foo-1.2.tar.gz')}/foo-1.2.tar.gz"
    assert foo.urls == (
        f"https://distfiles.gentoo.org/{foo.ref.path}",
        f"https://Mirror.example.edu/gentoo/{foo.ref.path}",
    )
    assert foo.key == keys.normalize(foo.urls[0]) and foo.line == 8
    assert bar.ref.uri == "/m/gentoo/distfiles/d5/bar-2.0.tar.xz"
    assert (bar.pins.sha256, bar.pins.blake2b, bar.pins.size) == (SHA, B2, 123)
    assert bar.pins.digests() == (("blake2b", B2), ("size", "123"))


M = "mirrors:\n  g:\n    sources: [https://s.example/]\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mirrors:\n  g:\n    files: [a]\n", "m.yaml:3: mirror 'g' has no 'sources'"),
        ("mirrors:\n  g:\n    sources: []\n", "m.yaml:3: mirror 'g': 'sources' must be"),
        ("mirrors:\n  g:\n    sources: [ftp://s/]\n", "m.yaml:3: mirror 'g': source 'ftp://s/'"),
        ("mirrors:\n  g:\n    sources: [https://u:p@s/]\n", "m.yaml:3: mirror 'g': source"),
        ("mirrors:\n  g:\n    sources: ['https://s/?a=1']\n", "m.yaml:3: mirror 'g': source"),
        ("mirrors:\n  g:\n    sources: ['https://s/a;b/']\n", "m.yaml:3: mirror 'g': source"),
        (
            "mirrors:\n  g:\n    sources: [https://s/, 'https://s']\n",
            "m.yaml:3: mirror 'g': source https://s is listed twice",
        ),
        ("mirrors:\n  ../x:\n    sources: [https://s/]\n", "m.yaml:2: mirror name '../x'"),
        ("mirrors:\n  g:\n    source: [https://s/]\n", "m.yaml:3: unknown key 'source'"),
        (M + "    layout: debian\n", "m.yaml:4: mirror 'g': unknown layout 'debian'"),
        (M + "    auto: sometimes\n", "m.yaml:4: mirror 'g': auto must be true or false"),
        (M + "    fallthrough: 1\n", "m.yaml:4: mirror 'g': fallthrough must be true or false"),
        (M + "    files: a\n", "m.yaml:4: mirror 'g': 'files' must be a list"),
        (M + "    files: [../etc/passwd]\n", "m.yaml:4: mirror 'g': path '../etc/passwd'"),
        (M + "    files: [/abs]\n", "m.yaml:4: mirror 'g': path '/abs' must be relative"),
        (M + "    files: ['a%2Fb']\n", "m.yaml:4: mirror 'g': path 'a%2Fb' contains '%'"),
        (M + "    files: ['a b']\n", "m.yaml:4: mirror 'g': path 'a b' contains ' '"),
        (M + "    files: ['a//b']\n", "m.yaml:4: mirror 'g': path 'a//b' has an empty"),
        (M + "    files: [" + "x" * 1025 + "]\n", "m.yaml:4: mirror 'g': path is 1025"),
        (M + "    files: [" + "x" * 256 + "]\n", "m.yaml:4: mirror 'g': path"),
        (M + "    files: [a, a]\n", "m.yaml:4: mirror 'g': a is listed twice"),
        (M + "    files:\n      - sha256: " + SHA + "\n", "m.yaml:5: mirror 'g': a file entry"),
        (M + "    files:\n      - path: a\n        md5: x\n", "m.yaml:6: unknown key 'md5'"),
        (M + "    files:\n      - path: a\n        sha256: 1\n", "m.yaml:6: sha256 must be 64"),
        (M + "    files:\n      - path: a\n        blake2b: 12\n", "m.yaml:6: mirror 'g': blake2b"),
        (M + "    files:\n      - path: a\n        sha512: zz\n", "m.yaml:6: mirror 'g': sha512"),
        (M + "    files:\n      - path: a\n        size: -1\n", "m.yaml:6: mirror 'g': size must"),
        (
            M + "    layout: gentoo\n    files: [distfiles/00/foo-1.2.tar.gz]\n",
            "m.yaml:5: mirror 'g': distfiles/00/foo-1.2.tar.gz is not where GLEP 75 puts it: "
            f"distfiles/{b2_dir('foo-1.2.tar.gz')}/foo-1.2.tar.gz",
        ),
        (
            M + "    layout: gentoo\n    files: [distfiles/layout.conf]\n",
            "m.yaml:5: mirror 'g': distfiles/layout.conf is written by withcache",
        ),
        ("mirrors: [a]\n", "m.yaml:1: mirrors must be a mapping"),
    ],
)
def test_each_problem_has_its_line(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(write(tmp_path, "m.yaml", text))
    assert any(f.startswith(f"{tmp_path}/{expected}") for f in found), found


def test_same_key_in_two_places_and_a_name_defined_twice(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "artifacts:\n  - https://s.example/pub/x.tgz\n")
    write(
        tmp_path,
        "b.yaml",
        """
        mirrors:
          one:
            sources: [https://S.example/pub/]
            files: [x.tgz, y.tgz]
          two:
            sources: [https://s.example/pub/, https://t.example/]
            files: [y.tgz]
        """,
    )
    write(tmp_path, "c.yaml", "mirrors:\n  one:\n    sources: [https://u.example/]\n")
    assert problems(tmp_path) == [
        f"{tmp_path}/b.yaml:4: https://S.example/pub/x.tgz is already listed at "
        f"{tmp_path}/a.yaml:2 (same key as https://s.example/pub/x.tgz); list it once "
        "(a mirror file is served at /b/ too)",
        f"{tmp_path}/b.yaml:7: https://s.example/pub/y.tgz is already listed at "
        f"{tmp_path}/b.yaml:4 (same key as https://S.example/pub/y.tgz); list it once "
        "(a mirror file is served at /b/ too)",
        f"{tmp_path}/c.yaml:2: mirror 'one' is already defined at {tmp_path}/b.yaml:2",
    ]


def test_check_reports_mirror_problems_and_exits_2(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", M + "    files: [../x]\n")
    r = run_withcache("check", str(bad))
    assert r.returncode == 2
    assert r.stderr == (
        f"withcache: error: {bad}:4: mirror 'g': path '../x' has an empty, '.' or '..' segment\n"
    )
    good = write(tmp_path, "good.yaml", M + "    files: [a/b.tgz]\n")
    assert run_withcache("check", str(good)).returncode == 0


@pytest.mark.parametrize(
    "name",
    ["foo-1.2.tar.gz", "bar-2.0.tar.xz", "which-2.23.tar.gz", "gtk+-2.24.33.tar.xz", "a", "é.tgz"],
)
def test_glep75_directory_is_blake2b_first_byte(name: str) -> None:
    assert gentoo.hash_dir(name) == b2_dir(name)
    assert gentoo.distfile_path(name) == f"distfiles/{b2_dir(name)}/{name}"


def test_glep75_known_vectors_and_layout_conf() -> None:
    # Gentoo's own mirrors hold which-2.23.tar.gz at distfiles/80/; the issue's bar at d5/.
    assert gentoo.distfile_path("which-2.23.tar.gz") == "distfiles/80/which-2.23.tar.gz"
    assert gentoo.distfile_path("bar-2.0.tar.xz") == "distfiles/d5/bar-2.0.tar.xz"
    assert gentoo.LAYOUT_CONF == "[structure]\n0=filename-hash BLAKE2B 8\n"


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"),
        min_size=1,
        max_size=80,
    )
)
def test_glep75_matches_hashlib_for_any_name(name: str) -> None:
    h = gentoo.hash_dir(name)
    assert h == b2_dir(name) and len(h) == 2 and h == h.lower()


SAFE = st.sampled_from(list("abcXYZ019._~+@,=:!-"))
segment = st.text(SAFE, min_size=1, max_size=12).filter(lambda s: s not in {".", ".."})
good_paths = st.lists(segment, min_size=1, max_size=6).map("/".join)


@settings(max_examples=300, deadline=None)
@given(good_paths)
def test_any_safe_path_round_trips_through_a_request(path: str) -> None:
    assert paths.path_problem(path) is None
    ref = paths.MirrorRef("gentoo", path)
    assert paths.from_request(ref.uri) == ref
    assert paths.from_request("/m/gentoo/" + quote(path, safe="/")) == ref  # portage quotes
    assert paths.from_request(ref.uri + "?x=1") == ref
    assert paths.from_miss_key(ref.miss_key) == ref


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60))
def test_a_request_either_names_a_safe_path_or_nothing(tail: str) -> None:
    ref = paths.from_request("/m/" + tail)
    if ref is not None:
        assert paths.name_problem(ref.name) is None
        assert paths.path_problem(ref.path) is None
        assert ".." not in ref.path.split("/") and "%" not in ref.path


@pytest.mark.parametrize(
    "uri",
    [
        "/m/gentoo/../../state/withcache.db",
        "/m/gentoo/..%2f..%2fstate%2fwithcache.db",
        "/m/gentoo/%2e%2e/%2e%2e/etc/passwd",
        "/m/gentoo/a%00b",
        "/m/gentoo/a%2",
        "/m/gentoo/",
        "/m/gentoo",
        "/m/gentoo/dir/",
        "/m/gentoo/" + "a" * 256,
        "/m/gentoo/" + "a/" * 600 + "a",
        "/m/../b/x",
        "/m/.hidden-name/x",
        "/m/gentoo/a%20b",
        "/m/gentoo/a;b",
        "/m/gentoo/%C3%A9",
        "/b/aHR0cA/x",
    ],
)
def test_hostile_request_paths_name_no_mirror_file(uri: str) -> None:
    assert paths.from_request(uri) is None


def test_percent_encoded_and_dotted_spellings_resolve_like_nginx() -> None:
    want = paths.MirrorRef("gentoo", "distfiles/80/which-2.23.tar.gz")
    for uri in (
        "/m/gentoo/distfiles/80/which-2.23.tar.gz",
        "/m/gentoo/distfiles%2F80%2Fwhich-2.23.tar.gz",
        "/m/gentoo//distfiles/./80/x/../which-2.23.tar.gz",
        "/m/gentoo/distfiles/80/which%2D2.23.tar.gz",
    ):
        assert paths.from_request(uri) == want, uri
