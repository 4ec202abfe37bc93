"""The POSIX sh shims against withcache.keys, without a network.

The real tool is a stand-in (`fake`, below): it answers the shim's HEAD probes as
told by FAKE_MODE, logs every probed URL, and when exec'd for real prints its argv.
So what the shim probes and what it finally runs are both observable, and the
differential tests check them byte for byte against what withcache.keys predicts,
under dash and busybox sh, for curl and wget.
"""

from __future__ import annotations

import os
import shutil
import string
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import key_vectors
from withcache import keys
from withcache.shims import install_shims

ROOT = Path(__file__).resolve().parent.parent
SHIM = ROOT / "shims" / "curlwithcache"
SERVER = "http://cache.test:8080"
SHELLS = {
    "dash": [shutil.which("dash") or "dash"],
    "busybox": [shutil.which("busybox") or "busybox", "sh"],
}
TOOLS = ["curl", "wget"]

# The stand-in for curl and wget. Probes are recognised by their first argument
# (curl -q, wget --no-config). FAKE_MODE: all = every probe 200; none = 404;
# down = unreachable; query = 404 for the first FAKE_FIRST probes (the
# query-less keys), 200 after (the keep-query second round).
FAKE = r"""#!/bin/sh
case ${0##*/}:$1 in
curl:-q | wget:--no-config)
	for a do
		case $a in http://* | https://*) ;; *) continue ;; esac
		printf '%s\0' "$a" >>"$FAKE_LOG"
		code=404
		case $FAKE_MODE in
		all) code=200 ;;
		down) code=000 ;;
		query)
			read -r n <"$FAKE_LOG.n"
			echo $((n + 1)) >"$FAKE_LOG.n"
			[ "$n" -ge "$FAKE_FIRST" ] && code=200 ;;
		esac
		if [ "$1" = -q ]; then
			echo "$code"
			[ $code = 000 ] && exit 7
		else
			[ $code = 000 ] && exit 4
			echo "  HTTP/1.1 $code Whatever" >&2
			echo "  Server: fake" >&2
		fi
	done
	exit 0 ;;
esac
printf '%s\0' "$@"
"""


@dataclass
class Run:
    argv: list[str]  # what the real tool was exec'd with
    probes: list[str]  # the cache URLs the shim HEADed
    returncode: int
    stderr: str


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fakes")
    for tool in TOOLS:
        (d / tool).write_text(FAKE)
        (d / tool).chmod(0o755)
    return d


def have(shell: str) -> None:
    if not os.path.isabs(SHELLS[shell][0]):
        pytest.skip(f"{shell} is not installed")


def shim_cmd(shell: str, tool: str) -> list[str]:
    return [*SHELLS[shell], str(SHIM.parent / f"{tool}withcache")]


def run(
    shell: str,
    tool: str,
    args: list[str],
    fakes: Path,
    mode: str = "all",
    server: str | None = SERVER,
    log_name: str = "probes.log",
    **env: str,
) -> Run:
    log = fakes / log_name
    log.write_bytes(b"")
    Path(f"{log}.n").write_text("0\n")
    e = {
        "PATH": os.environ["PATH"],
        "FAKE_LOG": str(log),
        "FAKE_MODE": mode,
        "FAKE_FIRST": str(sum(1 for a in args if cacheable(a))),
        f"REAL_{tool.upper()}": str(fakes / tool),
        "LC_ALL": "C.UTF-8",  # busybox is Unicode-aware then: the harder case
    }
    if server is not None:
        e["WITHCACHE_SERVER"] = server
    e.update(env)
    r = subprocess.run(shim_cmd(shell, tool) + args, env=e, capture_output=True, timeout=60)
    return Run(
        argv=split0(r.stdout),
        probes=split0(log.read_bytes()),
        returncode=r.returncode,
        stderr=r.stderr.decode(errors="replace"),
    )


def split0(b: bytes) -> list[str]:
    return [x.decode("utf-8", "surrogateescape") for x in b.split(b"\0")[:-1]]


def cacheable(url: str) -> bool:
    return keys.is_cacheable(url)


def has_query(url: str) -> bool:
    """Has a query the keep-query key keeps (not none, not empty)."""
    return cacheable(url) and bool(keys.parse(url).query)


def cache_url(url: str, keep_query: bool = False) -> str:
    return SERVER + keys.cache_path(keys.normalize(url, keep_query))


def predicted(url: str, tool: str, mode: str) -> str:
    """What withcache.keys says the shim must turn URL argument `url` into."""
    if not cacheable(url):
        return url
    query = keys.parse(url).query
    if mode == "all":
        new = cache_url(url)
    elif mode == "query" and query:
        new = cache_url(url, keep_query=True)
    else:
        return url
    if tool == "wget" and query:
        new += "?" + query  # wget names the saved file after the query too
    return new


def predicted_probes(urls: list[str], mode: str) -> list[str]:
    first = [cache_url(u) for u in urls if cacheable(u)]
    if mode != "query":
        return first
    second = [cache_url(u, True) for u in urls if cacheable(u) and keys.parse(u).query]
    return first + second


def lead(tool: str) -> list[str]:
    # -g: curl takes the URLs literally, so [ ] { } are no glob (tested apart).
    return ["-g", "-s"] if tool == "curl" else ["-q"]


# --- The key vectors ---------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("tool", TOOLS)
def test_key_vectors(shell: str, tool: str, fakes: Path) -> None:
    have(shell)
    for keep_query, url, path in key_vectors():
        # Each vector alone, so only its own key can hit: with keep_query the
        # query-less key must miss first (mode query), else the first probe hits.
        mode = "query" if keep_query and has_query(url) else "all"
        r = run(shell, tool, [*lead(tool), url], fakes, mode=mode)
        assert r.returncode == 0, r.stderr
        if path == "-":
            assert r.argv[-1] == url and r.probes == [], url
            continue
        want = SERVER + path
        if tool == "wget" and has_query(url):
            want += "?" + keys.parse(url).query  # type: ignore[operator]
        assert r.argv[-1] == want, url
        assert r.argv[:-1] == lead(tool)


# --- Hypothesis: >= 500 URLs per shell and tool --------------------------------


# Every character but NUL (argv cannot hold it), surrogates (not UTF-8), and
# non-ASCII digits: Python's str.isdigit() takes '٣' as a port digit, a shell
# cannot tell (see the report; keys.py could require ASCII digits).
def _ok(c: str) -> bool:
    return c != "\0" and not (c.isdigit() and not c.isascii())


CHARS = st.characters(blacklist_categories=("Cs",)).filter(_ok)
URLISH = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/%?#[]{} "
PIECE = st.one_of(
    st.text(URLISH, max_size=30),
    st.text(CHARS, max_size=10),
    st.sampled_from(["%20", "%E2%9C%93", "ü", "грюсс", "a+b~c", "..", "//", "%2F", "\t", "\n"]),
)
SCHEMES = st.sampled_from(
    ["http", "https", "http", "https", "HTTP", "Https", "hTtPs", "HttP", "ftp", "httpx"]
)
HOSTS = st.one_of(
    st.text(string.ascii_letters + string.digits + ".-", min_size=0, max_size=40),
    st.sampled_from(["Example.ORG", "127.0.0.1", "[2001:DB8::1]", "[::1", "münchen.de", "a b"]),
    st.text(CHARS, max_size=12),
)
PORTS = st.one_of(
    st.sampled_from([None, None, None, "", "80", "443", "080", "8443", "x", "1:2"]),
    st.integers(0, 70000).map(str),
)


@st.composite
def urls(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:  # now and then: anything after a scheme
        return draw(SCHEMES) + "://" + draw(st.text(CHARS, max_size=60))
    url = draw(SCHEMES) + "://"
    if draw(st.booleans()):
        url += draw(st.text(URLISH.replace("/", "").replace("#", ""), max_size=15)) + "@"
    url += draw(HOSTS)
    port = draw(PORTS)
    if port is not None:
        url += ":" + port
    if draw(st.integers(0, 4)):
        segs = draw(st.lists(PIECE, max_size=8))
        url += "/" + "/".join(segs)
        if draw(st.integers(0, 9)) == 0:  # long: up to ~2,000 characters
            url += "/" + "x" * draw(st.integers(200, 1900))
    if draw(st.booleans()):
        url += "?" + draw(st.text(URLISH.replace("#", ""), max_size=30))
    if draw(st.integers(0, 3)) == 0:
        url += "#" + draw(st.text(URLISH, max_size=15))
    return url


# The shim must see each as a URL operand: an argument starting with '-' would be
# an option; one that does not start with a scheme is no URL at all.
URL_ARGS = st.lists(urls().filter(lambda u: not u.startswith("-")), min_size=20, max_size=24)
DIFF = settings(
    max_examples=64,  # ~10 cacheable URLs a batch: comfortably over 500 in all
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_rewritten_argv_matches_keys(fakes: Path) -> None:
    """Each batch of URLs through both shells, both tools, and both probe outcomes
    (first key hits; first misses and the keep-query key hits)."""
    for shell in SHELLS:
        have(shell)
    seen: list[int] = []

    combos = [(s, t, m) for s in SHELLS for t in TOOLS for m in ("all", "query")]

    def one(batch: list[str], shell: str, tool: str, mode: str) -> None:
        urls = batch if mode == "all" else [u for u in batch if has_query(u)]
        r = run(shell, tool, [*lead(tool), *urls], fakes, mode, log_name=f"{shell}-{tool}-{mode}")
        where = f"{shell} {tool} {mode}"
        assert r.returncode == 0, (where, r.stderr)
        assert r.probes == predicted_probes(urls, mode), where
        assert r.argv == lead(tool) + [predicted(u, tool, mode) for u in urls], where

    @DIFF
    @given(batch=URL_ARGS)
    def check(batch: list[str]) -> None:
        # The eight runs of a batch are independent processes: run them at once.
        with ThreadPoolExecutor(len(combos)) as pool:
            for f in [pool.submit(one, batch, *c) for c in combos]:
                f.result()
        seen.append(sum(1 for u in batch if cacheable(u)))

    check()
    assert sum(seen) >= 500


# --- Arguments: only URL operands are replaced ---------------------------------

U = "https://example.org/dir/a.tar.gz"
U2 = "http://Other.example:80/x/b%20c.bin?sig=1#f"
PROXY = "http://proxy.test:3128"


def hit(url: str) -> str:
    return cache_url(url)


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    "args, want",
    [
        (["-x", PROXY, U], ["-x", PROXY, hit(U)]),
        (["--proxy", PROXY, "-e", U2, U], ["--proxy", PROXY, "-e", U2, hit(U)]),
        (["-H", f"Referer: {U}", "-A", U, U2], ["-H", f"Referer: {U}", "-A", U, hit(U2)]),
        (["-sSLo", U, U2], ["-sSLo", U, hit(U2)]),  # -o takes U as its file
        (["-sSLofile", U], ["-sSLofile", hit(U)]),  # value glued to the cluster
        (["--url", U, "-o", "out"], ["--url", hit(U), "-o", "out"]),
        (["--url=" + U], ["--url=" + hit(U)]),  # curl >= 8.16 syntax
        (["--output", U2, "--", U], ["--output", U2, "--", hit(U)]),
        (["--", "-O", U], ["--", "-O", hit(U)]),
        (["--referer", U, "--write-out", U2, U], ["--referer", U, "--write-out", U2, hit(U)]),
        (["--outp", U2, U], ["--outp", U2, hit(U)]),  # abbreviation of --output
        (["--head", U], ["--head", hit(U)]),  # a flag, though a prefix of --header
        (["-OJ", U, "-O", U2], ["-OJ", hit(U), "-O", hit(U2)]),
        (["-X", "GET", U], ["-X", "GET", hit(U)]),
        (["--expand-url", U, U2], ["--expand-url", U, hit(U2)]),
        (["-K", "cfg", "ftp://example.org/a", "example.org/a", U], None),
    ],
)
def test_curl_arguments(shell: str, args: list[str], want: list[str] | None, fakes: Path) -> None:
    have(shell)
    if want is None:
        want = [*args[:-1], hit(args[-1])]
    r = run(shell, "curl", args, fakes)
    assert r.returncode == 0, r.stderr
    assert r.argv == want


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    "args, want",
    [
        (["-O-", U], ["-O-", hit(U)]),
        (["-qO", U2, U], ["-qO", U2, hit(U)]),  # -O takes U2 as its file
        (["-e", "robots=off", U], ["-e", "robots=off", hit(U)]),
        (["--header=Referer: " + U, U], ["--header=Referer: " + U, hit(U)]),
        (["--referer", U, "-P", "dir", U2], ["--referer", U, "-P", "dir", hit(U2) + "?sig=1"]),
        (["-O", "out", U2], ["-O", "out", hit(U2)]),  # -O names the file: no query kept
        (["-nv", U, "-t", "3"], ["-nv", hit(U), "-t", "3"]),
        (["--user-agent", U2, "--", U], ["--user-agent", U2, "--", hit(U)]),
    ],
)
def test_wget_arguments(shell: str, args: list[str], want: list[str], fakes: Path) -> None:
    have(shell)
    r = run(shell, "wget", args, fakes)
    assert r.returncode == 0, r.stderr
    assert r.argv == want


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    "tool, args",
    [
        ("curl", ["-d", "a=1", U]),
        ("curl", ["-sd@file", U]),
        ("curl", ["--data-binary", "@f", U]),
        ("curl", ["-F", "f=@x", U]),
        ("curl", ["-T", "file", U]),
        ("curl", ["-X", "POST", U]),
        ("curl", ["--request=PUT", U]),
        ("curl", ["--json", "{}", U]),
        ("curl", [U, "--url-query", "a=b"]),
        ("curl", ["-s", "https://example.org/f[1-3].bin"]),  # a glob, without -g
        ("curl", ["https://example.org/{a,b}.bin"]),
        ("wget", ["-r", U]),
        ("wget", ["-m", U]),
        ("wget", ["-qp", U]),
        ("wget", ["-x", U]),
        ("wget", ["--post-data=a=1", U]),
        ("wget", ["--method", "PUT", U]),
        ("wget", ["--recursive", U]),
    ],
)
def test_no_plain_download_is_left_alone(
    shell: str, tool: str, args: list[str], fakes: Path
) -> None:
    """Sending data, another method, a curl glob, a recursive wget: not a download
    of that URL as it stands, so no probe and the arguments untouched."""
    have(shell)
    r = run(shell, tool, args, fakes)
    assert r.returncode == 0, r.stderr
    assert (r.argv, r.probes) == (args, [])


# --- Probe outcomes --------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("mode", ["none", "down"])
def test_miss_and_unreachable_leave_arguments_untouched(
    shell: str, tool: str, mode: str, fakes: Path
) -> None:
    have(shell)
    args = ["-o" if tool == "curl" else "-O", "out", U, U2, "https://example.org/?q"]
    r = run(shell, tool, args, fakes, mode=mode)
    assert r.returncode == 0, r.stderr
    assert r.argv == args
    if mode == "none":  # each probed, then the two with a query with the query kept
        assert r.probes == [
            hit(U),
            hit(U2),
            hit(args[-1]),
            cache_url(U2, True),
            cache_url(args[-1], True),
        ]
    else:  # unreachable: one probe, no second round
        assert r.probes == [hit(U)]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("tool", TOOLS)
def test_no_server_means_no_probe_and_no_parsing(shell: str, tool: str, fakes: Path) -> None:
    have(shell)
    args = ["-d", "x", U, "--url", U2, "-x", PROXY]
    r = run(shell, tool, args, fakes, server=None)
    assert (r.argv, r.probes, r.returncode) == (args, [], 0)
    # The per-tool variable alone turns it on, for its tool only.
    other = "WGETWITHCACHE_SERVER" if tool == "curl" else "CURLWITHCACHE_SERVER"
    r = run(shell, tool, [U], fakes, server=None, **{other: SERVER})
    assert (r.argv, r.probes) == ([U], [])
    mine = f"{tool.upper()}WITHCACHE_SERVER"
    r = run(shell, tool, [U], fakes, server=None, **{mine: "cache.test:8080//"})
    assert (r.argv, r.probes) == ([hit(U)], [hit(U)])


@pytest.mark.parametrize(
    "server", ["cache.test:8080", "http://cache.test:8080/", "cache.test:8080//"]
)
def test_server_forms(server: str, fakes: Path) -> None:
    r = run("dash", "curl", [U], fakes, server=server)
    assert r.argv == [hit(U)]


def probe_argv(tool: str, tmp_path: Path, **env: str) -> list[str]:
    """The argv of the shim's probe, through a real tool that records it."""
    log = tmp_path / "argv"
    log.unlink(missing_ok=True)
    real = tmp_path / tool
    answer = "echo 200" if tool == "curl" else "echo '  HTTP/1.1 200 OK' >&2"
    real.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >>{log}\n{answer}\n')
    real.chmod(0o755)
    e = {"PATH": os.environ["PATH"], "WITHCACHE_SERVER": SERVER, f"REAL_{tool.upper()}": str(real)}
    e.update(env)
    subprocess.run([*shim_cmd("dash", tool), U], env=e, check=True, capture_output=True)
    lines = log.read_text().split("\n")
    return lines[: lines.index(hit(U)) + 1]


def has(argv: list[str], *opt: str) -> bool:
    return any(argv[i : i + len(opt)] == list(opt) for i in range(len(argv)))


def test_curl_probe_is_a_head_without_curlrc_redirects_or_globbing(tmp_path: Path) -> None:
    probe = probe_argv("curl", tmp_path, WITHCACHE_TIMEOUT="0.5")
    assert probe[0] == "-q"  # no curlrc: must come first
    for opt in (["-I"], ["-g"], ["--connect-timeout", "0.5"], ["-m", "0.5"], ["-o", "/dev/null"]):
        assert has(probe, *opt), opt
    assert "-L" not in probe and "--location" not in probe


def test_wget_probe_is_a_spider_without_wgetrc_redirects_or_retries(tmp_path: Path) -> None:
    probe = probe_argv("wget", tmp_path)
    assert probe[0] == "--no-config"
    for opt in (["--spider"], ["--max-redirect=0"], ["--tries=1"], ["-T", "2"]):
        assert has(probe, *opt), opt


@pytest.mark.parametrize(
    "value, seconds",
    [(None, "2"), ("", "2"), ("0.5", "0.5"), ("10", "10"), ("0", "2"), ("x", "2"), ("1.2.3", "2")],
)
def test_probe_timeout_comes_from_withcache_timeout(
    value: str | None, seconds: str, tmp_path: Path
) -> None:
    env = {} if value is None else {"WITHCACHE_TIMEOUT": value}
    assert has(probe_argv("curl", tmp_path, **env), "-m", seconds)


# --- Finding the real tool -------------------------------------------------------


def install(d: Path, name: str, how: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    if how == "symlink":
        p.symlink_to(SHIM)
    else:
        shutil.copy(SHIM, p)
    return p


def real_curl(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / "curl"
    p.write_text('#!/bin/sh\necho "real $0 $*"\n')
    p.chmod(0o755)
    return p


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("how", ["symlink", "copy"])
def test_installed_as_curl_finds_the_next_curl(shell: str, how: str, tmp_path: Path) -> None:
    have(shell)
    install(tmp_path / "shims", "curl", how)
    real_curl(tmp_path / "real")
    # A relative PATH entry, spelt otherwise than the shim's $0.
    env = {"PATH": f"./shims:{tmp_path / 'real'}:/usr/bin:/bin"}
    r = subprocess.run(
        [*SHELLS[shell], "shims/curl", "-s", U],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert r.stdout == f"real {tmp_path / 'real' / 'curl'} -s {U}\n", r.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_two_copies_on_path_do_not_loop(shell: str, tmp_path: Path) -> None:
    have(shell)
    a = install(tmp_path / "a", "curl", "copy")
    install(tmp_path / "b", "curl", "copy")
    real_curl(tmp_path / "real")
    env = {"PATH": f"{tmp_path / 'a'}:{tmp_path / 'b'}:{tmp_path / 'real'}"}
    r = subprocess.run(
        [*SHELLS[shell], str(a), U], env=env, capture_output=True, text=True, timeout=10
    )
    assert r.stdout == f"real {tmp_path / 'real' / 'curl'} {U}\n", r.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_real_curl_naming_the_shim_is_ignored(shell: str, tmp_path: Path) -> None:
    have(shell)
    shim = install(tmp_path / "bin", "curl", "symlink")
    real_curl(tmp_path / "real")
    env = {"PATH": f"{tmp_path / 'bin'}:{tmp_path / 'real'}", "REAL_CURL": str(shim)}
    r = subprocess.run(
        [*SHELLS[shell], str(shim), U], env=env, capture_output=True, text=True, timeout=10
    )
    assert r.stdout.startswith(f"real {tmp_path / 'real' / 'curl'}"), r.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_no_real_tool_is_exit_127(shell: str, tmp_path: Path) -> None:
    have(shell)
    shim = install(tmp_path / "bin", "wget", "symlink")
    r = subprocess.run(
        [*SHELLS[shell], str(shim), U],
        env={"PATH": str(tmp_path / "bin")},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert r.returncode == 127
    assert "no real wget" in r.stderr and "REAL_WGET" in r.stderr


def test_exit_status_and_stdin_are_the_real_tools(tmp_path: Path) -> None:
    real = tmp_path / "curl"
    real.write_text("#!/bin/sh\ncase $1 in -q) echo 200; exit 0;; esac\ncat; exit 42\n")
    real.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "WITHCACHE_SERVER": SERVER, "REAL_CURL": str(real)}
    r = subprocess.run(
        [*SHELLS["dash"], str(SHIM), U], env=env, input="stdin data", capture_output=True, text=True
    )
    assert (r.returncode, r.stdout) == (42, "stdin data")  # the probe did not eat stdin


def test_shims_are_executable_and_one_implementation() -> None:
    for tool in TOOLS:
        p = SHIM.parent / f"{tool}withcache"
        assert os.access(p, os.X_OK)
        assert p.read_bytes() == SHIM.read_bytes()
        assert p.read_text().startswith("#!/bin/sh\n")


def test_shellcheck_clean() -> None:
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed")
    for dialect in ("sh", "dash"):
        r = subprocess.run(["shellcheck", "-s", dialect, str(SHIM)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout


# --- install_shims ---------------------------------------------------------------


def test_install_shims_plain_and_shadowing(tmp_path: Path) -> None:
    d = tmp_path / "bin"
    assert install_shims(d, shadow=False) == [d / "curlwithcache", d / "wgetwithcache"]
    assert sorted(p.name for p in d.iterdir()) == ["curlwithcache", "wgetwithcache"]
    for p in d.iterdir():
        assert p.read_bytes() == SHIM.read_bytes()
        assert p.stat().st_mode & 0o777 == 0o755
    written = install_shims(d, shadow=True)  # again, now with the links
    assert [p.name for p in written] == ["curlwithcache", "wgetwithcache", "curl", "wget"]
    assert os.readlink(d / "curl") == "curlwithcache"
    assert os.readlink(d / "wget") == "wgetwithcache"
    install_shims(d, shadow=True)  # idempotent
    assert sorted(p.name for p in d.iterdir()) == ["curl", "curlwithcache", "wget", "wgetwithcache"]

    # Installed as `curl` first on PATH, it runs the real curl behind it.
    real_curl(tmp_path / "real")
    env = {"PATH": f"{d}:{tmp_path / 'real'}"}
    r = subprocess.run(["curl", "-s", U], env=env, capture_output=True, text=True, timeout=10)
    assert r.stdout == f"real {tmp_path / 'real' / 'curl'} -s {U}\n", r.stderr


def test_install_shims_never_replaces_a_real_tool(tmp_path: Path) -> None:
    d = tmp_path / "bin"
    real = real_curl(d)
    with pytest.raises(FileExistsError, match="not a withcache shim"):
        install_shims(d, shadow=True)
    assert real.read_text().startswith("#!/bin/sh\necho")
    assert not (d / "curlwithcache").exists()  # nothing half done
    install_shims(d, shadow=False)  # the shims alone are fine beside it
    assert (d / "curlwithcache").exists() and real.read_text().startswith("#!/bin/sh\necho")
