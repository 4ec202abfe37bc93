"""accesslog.parse_line: what each kind of nginx log line counts as (DESIGN: The watcher)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from withcache import keys
from withcache.accesslog import (
    Garbage,
    Hit,
    Ignored,
    Invalid,
    Miss,
    PageHit,
    ProjectMiss,
    parse_line,
    pep503,
)

T = "2026-11-21T10:00:00+00:00"
EPOCH = 1795255200.0


def line(uri: str, status: int = 404, method: str = "GET", **extra: object) -> str:
    """One line exactly as nginx's `log_format withcache escape=json` writes it."""
    d: dict[str, object] = {
        "time": T,
        "addr": "10.0.0.7",
        "method": method,
        "uri": uri,
        "status": status,
        "bytes": 0,
        "ua": "curl/8.5.0",
        "range": "",
        "rt": 0.0,
    }
    d.update(extra)
    return json.dumps(d, separators=(",", ":"))


def path_of(url: str) -> str:
    """The cache path a shim requests for an origin URL as typed (no normalising)."""
    tok = keys.token(url)
    return f"/b/{'/'.join(keys.segments(tok))}/{keys.name(keys.normalize(url))}"


CUDA = "https://vendor.example/cuda/cuda_12.6.3_linux.run"


@pytest.mark.parametrize(
    ("method", "status", "expected"),
    [
        ("GET", 404, Miss),
        ("HEAD", 404, Miss),  # a shim's probe: the usual miss signal
        ("GET", 200, Hit),
        ("GET", 206, Hit),
        ("HEAD", 200, Ignored),  # probes are not hits
        ("GET", 304, Ignored),
        ("GET", 416, Ignored),
        ("POST", 405, Ignored),
        ("POST", 404, Ignored),
    ],
)
def test_status_and_method_decide_what_a_request_counts_as(
    method: str, status: int, expected: type
) -> None:
    assert type(parse_line(line(path_of(CUDA), status, method))) is expected


def test_a_get_200_is_a_hit_with_its_bytes_and_time() -> None:
    r = parse_line(line(keys.cache_path(CUDA), 200, bytes=123456))
    assert r == Hit(CUDA, 123456, EPOCH)


def test_a_miss_is_keyed_by_the_normalised_url_and_shows_it_as_requested() -> None:
    typed = "HTTPS://Vendor.Example:443/cuda/cuda_12.6.3_linux.run?sig=abc#frag"
    r = parse_line(line(path_of(typed), ua="Wget/1.21"))
    assert isinstance(r, Miss)
    assert r.key == CUDA
    assert r.url == typed
    assert (r.time, r.addr, r.ua) == (EPOCH, "10.0.0.7", "Wget/1.21")


def test_credentials_in_a_requested_url_never_reach_the_display() -> None:
    r = parse_line(line(path_of("https://user:secret@vendor.example/a.bin")))
    assert isinstance(r, Miss)
    assert "secret" not in r.url and r.url == "https://vendor.example/a.bin"


def test_the_query_string_and_name_of_the_request_do_not_matter() -> None:
    a = parse_line(line(keys.cache_path(CUDA) + "?x=1"))
    b = parse_line(line(f"/b/{keys.token(CUDA)}/anything-at-all.bin"))
    assert isinstance(a, Miss) and isinstance(b, Miss)
    assert a.key == b.key == CUDA


def test_long_urls_use_split_tokens() -> None:
    url = "https://vendor.example/" + "d/" * 200 + "f.bin"
    assert len(keys.token(url)) > 255
    r = parse_line(line(keys.cache_path(url)))
    assert isinstance(r, Miss) and r.key == url


@pytest.mark.parametrize(
    "uri",
    [
        "/b/" + keys.token("javascript:alert(1)") + "/x",
        "/b/" + keys.token("<script>alert(1)</script>") + "/x",
        "/b/" + keys.token("ftp://vendor.example/a.bin") + "/a.bin",
        "/b/" + keys.token("file:///etc/passwd") + "/passwd",
        "/b/not~a~token/x",
        "/b/%41%42/x",
        "/b/",
        "/b/onlyonesegment",
        "/b/" + "A" * 256 + "/x",  # a segment over 255 characters
        "/b/" + "A" * 255 + "/" + "B" * 3 + "/x",  # ... fine, but decodes to no URL
        "/b/" + keys.token("https://") + "/x",  # no host
        "/b/" + keys.token("https://h:port/x") + "/x",
    ],
)
def test_a_token_that_is_no_http_url_is_invalid_not_a_miss(uri: str) -> None:
    assert type(parse_line(line(uri))) is Invalid


def test_an_html_path_in_a_real_url_is_a_miss_kept_verbatim_for_escaping_later() -> None:
    url = 'https://evil.example/"><script>alert(1)</script>.run'
    r = parse_line(line(path_of(url)))
    assert isinstance(r, Miss) and r.url == url


@pytest.mark.parametrize(
    ("uri", "project"),
    [
        ("/simple/torch/", "torch"),
        ("/simple/Foo_Bar/", "foo-bar"),
        ("/simple/zope.interface/", "zope-interface"),
        ("/simple/numpy", "numpy"),
        ("/simple/requests/?format=json", "requests"),
    ],
)
def test_a_404_under_simple_is_a_missing_python_project(uri: str, project: str) -> None:
    r = parse_line(line(uri))
    assert isinstance(r, ProjectMiss)
    assert r.project == project and r.key == "python:" + project


@pytest.mark.parametrize(
    ("uri", "status", "expected"),
    [
        ("/simple/torch/", 200, PageHit),
        ("/simple/", 404, Ignored),
        ("/simple/torch/torch-2.5.1.whl", 404, Ignored),
        ("/simple/-bad-/", 404, Invalid),
        ("/simple/<script>/", 404, Invalid),
        ("/simple/a%20b/", 404, Invalid),
    ],
)
def test_other_simple_paths(uri: str, status: int, expected: type) -> None:
    assert type(parse_line(line(uri, status))) is expected


def test_pep503() -> None:
    assert pep503("Foo__Bar.baz-Qux") == "foo-bar-baz-qux"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not json",
        '{"uri": "/b/x"',
        "[1, 2, 3]",
        '"a string"',
        "{}",
        '{"uri": 5, "status": 404, "method": "GET"}',
        '{"uri": "/b/x/y", "status": "404", "method": "GET"}',
        "[" * 100_000,  # deep nesting: RecursionError inside json
        '{"uri": "/x", "status": 1' + "0" * 5000 + ', "method": "GET"}',  # int too long
        line(keys.cache_path(CUDA)) + " trailing junk",
        line(keys.cache_path(CUDA), time="yesterday"),
        line(keys.cache_path(CUDA), time=["2026"]),  # unhashable where a string belongs
        line(keys.cache_path(CUDA), time="2026-11-21T10:00:00"),  # no zone
        "\0" * 4096,
    ],
)
def test_garbage_is_classified_never_raised(raw: str) -> None:
    assert type(parse_line(raw)) is Garbage
    assert type(parse_line(raw.encode())) is Garbage


def test_nul_bytes_before_a_line_are_what_a_crash_leaves_and_are_skipped() -> None:
    r = parse_line(b"\0" * 1000 + line(keys.cache_path(CUDA)).encode())
    assert isinstance(r, Miss)


def test_invalid_utf8_in_a_user_agent_is_kept_readable() -> None:
    raw = line(keys.cache_path(CUDA), ua="X").encode().replace(b'"ua":"X"', b'"ua":"\xe9\xff"')
    r = parse_line(raw)
    assert isinstance(r, Miss) and r.ua == "\ufffd\ufffd"


def test_a_lone_surrogate_escape_in_a_user_agent_becomes_storable_text() -> None:
    r = parse_line(line(keys.cache_path(CUDA), ua="a\ud800b", addr="\udfff"))
    assert isinstance(r, Miss)
    assert r.ua == "a?b" and r.addr == "?"
    r.ua.encode("utf-8")


def test_a_1mb_line_is_handled_and_the_user_agent_trimmed() -> None:
    r = parse_line(line(keys.cache_path(CUDA), ua="A" * 1_000_000))
    assert isinstance(r, Miss) and len(r.ua) == 300


def test_a_uri_longer_than_nginx_would_accept_is_invalid() -> None:
    assert type(parse_line(line("/b/" + "A" * 100_000 + "/x"))) is Invalid


def test_a_real_nginx_line_with_escapes() -> None:
    # copied from nginx 1.24's output for a HEAD with an odd user agent
    raw = (
        b'{"time":"2026-11-21T19:45:22+00:00","addr":"127.0.0.1","method":"HEAD",'
        b'"uri":"/b/aHR0cHM6Ly92ZW5kb3IuZXhhbXBsZS9taXNzaW5nLnJ1bg/missing.run",'
        b'"status":404,"bytes":0,"ua":"evil\\"\\u0001\xe9","range":"","rt":0.000}'
    )
    r = parse_line(raw)
    assert isinstance(r, Miss)
    assert r.key == "https://vendor.example/missing.run"
    assert r.ua == 'evil"\x01\ufffd'


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.just(keys.cache_path(CUDA)), st.just("/simple/torch/"), _text),
    st.sampled_from([200, 206, 404, 405]),
    st.sampled_from(["GET", "HEAD", "POST"]),
    _text,
    _text,
    st.integers(min_value=0, max_value=10**20),
    st.booleans(),
)
def test_the_fast_path_reads_exactly_what_a_json_parser_reads(
    uri: str, status: int, method: str, ua: str, addr: str, nbytes: int, escaped: bool
) -> None:
    """Lines in nginx's own format skip the JSON parser; the result must not change."""
    from withcache.accesslog import _EXACT, _parse_json

    raw = line(uri, status, method, ua=ua, addr=addr, bytes=nbytes)
    if not escaped:  # nginx writes bytes >= 0x80 as they are, not as \uXXXX
        raw = json.dumps(json.loads(raw), separators=(",", ":"), ensure_ascii=False)
    if nbytes < 10**19:
        assert _EXACT.fullmatch(raw)  # our own format: the fast path
    assert parse_line(raw) == _parse_json(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_give_a_classification(raw: bytes) -> None:
    assert type(parse_line(raw)) in (Hit, Miss, ProjectMiss, Invalid, Ignored, Garbage)


@settings(max_examples=200, deadline=None)
@given(
    st.text(
        st.characters(codec="utf-8", exclude_categories=("Cs",)),
        max_size=120,
    ),
    st.sampled_from(["GET", "HEAD"]),
)
def test_any_decoded_token_is_a_miss_of_its_normal_key_or_invalid(text: str, method: str) -> None:
    r = parse_line(line(f"/b/{'/'.join(keys.segments(keys.token(text)))}/n", 404, method))
    if keys.is_cacheable(text) and text:
        assert isinstance(r, Miss)
        assert r.key == keys.normalize(text)
    else:
        assert isinstance(r, Invalid)


@settings(max_examples=200, deadline=None)
@given(
    st.from_regex(r"\Ahttps?://[a-z0-9.-]{1,20}(:[0-9]{1,5})?/[A-Za-z0-9._~%/-]{0,60}\Z"),
)
def test_cacheable_urls_round_trip_through_a_log_line(url: str) -> None:
    r = parse_line(line(path_of(url)))
    assert isinstance(r, Miss)
    assert r.key == keys.normalize(url)
    assert r.url == url
