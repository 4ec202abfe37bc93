"""Keys: the shared vectors, and properties over generated URLs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import key_vectors, run_withcache
from withcache import keys


@pytest.mark.parametrize(("keep_query", "url", "expected"), key_vectors())
def test_vectors(keep_query: bool, url: str, expected: str) -> None:
    if expected == "-":
        with pytest.raises(keys.NotCacheable):
            keys.normalize(url, keep_query)
        assert not keys.is_cacheable(url)
    else:
        assert keys.cache_path(keys.normalize(url, keep_query)) == expected


hosts = st.one_of(
    st.from_regex(
        r"[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?(\.[A-Za-z]{2,6}){1,2}", fullmatch=True
    ),
    st.from_regex(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}", fullmatch=True),
    st.just("[2001:DB8::1]"),
)
path_chars = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="?#")
urls = st.builds(
    lambda scheme, cred, host, port, path, query, frag: (
        f"{scheme}://{cred}{host}{port}{path}{query}{frag}"
    ),
    st.sampled_from(["http", "https", "HTTP", "Https"]),
    st.sampled_from(["", "user@", "user:pa%40ss@"]),
    hosts,
    st.sampled_from(["", ":80", ":443", ":8080", ":"]),
    st.text(path_chars, max_size=600).map(lambda p: "/" + p if p else ""),
    st.one_of(st.just(""), st.text(path_chars, max_size=40).map(lambda q: "?" + q)),
    st.one_of(st.just(""), st.text(max_size=20).map(lambda f: "#" + f)),
)


@settings(max_examples=400, deadline=None)
@given(urls, st.booleans())
def test_properties(url: str, keep_query: bool) -> None:
    key = keys.normalize(url, keep_query)
    # normalising is idempotent, and a key of a key keeps the kept query
    assert keys.normalize(key, keep_query) == key
    tok = keys.token(key)
    assert keys.TOKEN_ALPHABET.match(tok)
    assert keys.decode_token(tok) == key
    path = keys.cache_path(key)
    parts = path.split("/")[2:-1]
    assert all(len(p.encode()) <= 255 for p in parts)
    assert "".join(parts) == tok
    assert keys.token_from_path(path) == tok
    assert keys.key_from_path(path) == key
    # credentials and fragments never reach a key
    assert "@" not in key.split("/")[2]
    assert "#" not in key
    assert keep_query or "?" not in key


def test_long_url_splits_into_255_segments() -> None:
    url = "https://vendor.example/" + "x" * 500 + "/fw.bin"
    path = keys.cache_path(keys.normalize(url))
    segs = path.split("/")[2:-1]
    assert len(segs) == 3 and [len(s) for s in segs[:-1]] == [255, 255]
    assert path.endswith("/fw.bin")


def test_decode_rejects_non_tokens() -> None:
    for bad in ["", "a", "ab$c", "////", "_w"]:
        with pytest.raises(ValueError):
            keys.decode_token(bad)
    assert keys.key_from_path("/b/" + keys.token("javascript:alert(1)") + "/x") is None
    assert keys.key_from_path("/simple/x/") is None


def test_key_command_prints_cache_path() -> None:
    r = run_withcache("key", "HTTPS://user:pw@Example.ORG:443/A.tar.gz?sig=1")
    assert r.returncode == 0
    assert r.stdout.splitlines() == [
        "/b/aHR0cHM6Ly9leGFtcGxlLm9yZy9BLnRhci5neg/A.tar.gz",
        "  key: https://example.org/A.tar.gz",
    ]
    r = run_withcache("key", "ftp://example.org/a")
    assert r.returncode == 2 and "only http and https" in r.stderr
