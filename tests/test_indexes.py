"""The private indexes' pure parts: the indexes: section, filenames, the multipart
reader, keys and their nginx prefixes, the users file."""

from __future__ import annotations

import io
import string
import textwrap
from pathlib import Path

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import check_server_block, run_withcache
from tests.indexes_e2e import wheel
from withcache import keys, manifest
from withcache.errors import ManifestError, UsageError
from withcache.indexes import dist, model, users
from withcache.indexes.config import RESERVED
from withcache.layout import Layout
from withcache.upload.form import Form, FormError


def load(tmp: Path, *texts: str) -> manifest.Manifest:
    paths = []
    for i, text in enumerate(texts):
        p = tmp / f"m{i}.yaml"
        p.write_text(textwrap.dedent(text).lstrip())
        paths.append(p)
    return manifest.load(paths)


def problems(tmp: Path, *texts: str) -> list[str]:
    with pytest.raises(ManifestError) as exc:
        load(tmp, *texts)
    return [str(p) for p in exc.value.problems]


def test_the_section_as_the_interface_says(tmp_path: Path) -> None:
    m = load(
        tmp_path,
        """
        indexes:
          team:
            read: [alice, ci]
            write: [ci]
            base: mirror
          open-one:
          nowrite:
            read: []
        """,
    )
    team, open_one, nowrite = m.indexes
    assert (team.name, team.read, team.write, team.base, team.line) == (
        "team", ("alice", "ci"), ("ci",), "mirror", 2,
    )  # fmt: skip
    assert (open_one.read, open_one.write, open_one.base) == (None, (), None)
    assert (nowrite.read, nowrite.write) == ((), ())


@pytest.mark.parametrize("name", sorted(RESERVED))
def test_a_name_that_collides_with_a_served_path_is_a_check_error(
    tmp_path: Path, name: str
) -> None:
    text = f'artifacts: []\nindexes:\n  "{name}":\n    write: [ci]\n'
    assert problems(tmp_path, text) == [
        f"{tmp_path}/m0.yaml:3: index name {name!r} collides with a path the cache serves (/{name})"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("indexes:\n  Team: {}\n", "m0.yaml:2: index name 'Team' must be lower-case"),
        ("indexes:\n  ../x: {}\n", "m0.yaml:2: index name '../x' must be lower-case"),
        ("indexes:\n  a%2fb: {}\n", "m0.yaml:2: index name 'a%2fb' must be lower-case"),
        ("indexes:\n  -x: {}\n", "m0.yaml:2: index name '-x' must be lower-case"),
        ("indexes:\n  t:\n    owner: me\n", "m0.yaml:3: unknown key 'owner' in index t"),
        ("indexes:\n  t:\n    base: pypi\n", "m0.yaml:3: indexes.t.base must be 'mirror'"),
        ("indexes:\n  t:\n    read: alice\n", "m0.yaml:3: indexes.t.read must be a list"),
        ("indexes:\n  t:\n    write: [a:b]\n", "m0.yaml:3: indexes.t.write: user name 'a:b'"),
        ("indexes:\n  t:\n    write: [ci, ci]\n", "m0.yaml:3: indexes.t.write: duplicate user"),
        ("indexes:\n  t: {}\n  t: {}\n", "m0.yaml:3: duplicate key 't' in indexes"),
        ("indexes: [team]\n", "m0.yaml:1: indexes must be a mapping"),
    ],
)
def test_section_problems_are_located(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(tmp_path, text)
    assert any(p.startswith(f"{tmp_path}/{expected}") for p in found), found


def test_an_index_defined_in_two_files_is_an_error_at_the_second(tmp_path: Path) -> None:
    found = problems(tmp_path, "indexes:\n  team: {}\n", "\nindexes:\n  team:\n    write: [x]\n")
    assert found == [
        f"{tmp_path}/m1.yaml:2: index 'team' is already defined at {tmp_path}/m0.yaml:2"
    ]


def test_check_exits_2_on_a_bad_index(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("indexes:\n  simple:\n    write: [ci]\n")
    r = run_withcache("check", str(tmp_path / "bad.yaml"))
    assert r.returncode == 2
    assert "bad.yaml:2: index name 'simple' collides with a path the cache serves" in r.stderr


@pytest.mark.parametrize(
    ("filename", "kind", "project", "version"),
    [
        ("foo-1.0-py3-none-any.whl", "wheel", "foo", "1.0"),
        (
            "Foo_Bar-2.0.post1-1-cp312-cp312-manylinux_2_28_x86_64.whl",
            "wheel",
            "foo-bar",
            "2.0.post1",
        ),
        ("foo_bar-1.0.tar.gz", "sdist", "foo-bar", "1.0"),
    ],
)
def test_filenames_that_parse(filename: str, kind: str, project: str, version: str) -> None:
    assert dist.parse_name(filename) == dist.Named(kind, project, version)


@pytest.mark.parametrize(
    ("filename", "why"),
    [
        ("foo-1.0.zip", "not a wheel"),
        ("foo-1.0.egg", "not a wheel"),
        ("foo-bar-1.0.tar.gz", "expected NAME-VERSION.tar.gz"),
        ("foo.whl", "invalid filename"),
        ("foo-notaversion-py3-none-any.whl", "invalid filename"),
        ("../foo-1.0-py3-none-any.whl", "unsafe filename"),
        ("a%2f..%2ffoo-1.0.tar.gz", "unsafe filename"),
        ("foo-1.0\0.tar.gz", "unsafe filename"),
        (".foo-1.0.tar.gz", "unsafe filename"),
        ("", "no name"),
    ],
)
def test_filenames_that_do_not(filename: str, why: str) -> None:
    with pytest.raises(dist.BadUpload, match=why):
        dist.parse_name(filename)


@given(st.text(min_size=1, max_size=40))
def test_a_name_with_a_path_or_an_escape_is_always_refused(tail: str) -> None:
    for sep in ("/", "\\", "%", "\0", "\n"):
        assert dist.filename_problem(f"a{sep}{tail}.whl") is not None


def test_inspect_reads_the_metadata_and_checks_it_agrees(tmp_path: Path) -> None:
    fn, body = wheel("agree", "1.0", requires_python=">=3.9")
    p = tmp_path / fn
    p.write_bytes(body)
    d = dist.inspect(p, fn)
    assert (d.project, d.version, d.requires_python) == ("agree", "1.0", ">=3.9")
    assert d.metadata.startswith(b"Metadata-Version: 2.1\nName: agree\n")
    with pytest.raises(dist.BadUpload, match="name mismatch: the filename says 'other'"):
        dist.inspect(p, "other-1.0-py3-none-any.whl")
    with pytest.raises(dist.BadUpload, match="version mismatch"):
        dist.inspect(p, "agree-1.1-py3-none-any.whl")
    form = {":action": "file_upload", "name": "Agree", "version": "1.0.0", "filetype": "sdist"}
    with pytest.raises(dist.BadUpload, match="filetype mismatch"):
        dist.check_form(d, form)
    dist.check_form(d, {**form, "filetype": "bdist_wheel"})
    with pytest.raises(dist.BadUpload, match="unsupported :action 'remove_pkg'"):
        dist.check_form(d, {**form, ":action": "remove_pkg"})


def encode(fields: dict[str, str], filename: str, body: bytes) -> tuple[bytes, str]:
    req = requests.Request(
        "POST", "http://x/", data=fields, files={"content": (filename, body)}
    ).prepare()
    assert isinstance(req.body, bytes)
    return req.body, req.headers["Content-Type"]


class Trickle(io.RawIOBase):
    """A body that arrives in pieces of a chosen size, like a socket."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step, self.pos = data, step, 0

    def read(self, n: int = -1) -> bytes:
        chunk = self.data[self.pos : self.pos + min(n if n > 0 else self.step, self.step)]
        self.pos += len(chunk)
        return chunk


@settings(max_examples=60, deadline=None)
@given(
    fields=st.dictionaries(
        st.text(string.ascii_letters + ":_", min_size=1, max_size=12).filter(
            lambda k: k != "content"
        ),
        st.text(max_size=200),
        max_size=6,
    ),
    body=st.binary(max_size=5000),
    step=st.integers(1, 4096),
)
def test_the_form_reader_gives_back_every_field_and_the_exact_file(
    fields: dict[str, str], body: bytes, step: int
) -> None:
    raw, ctype = encode(fields, "x-1.0.tar.gz", body)
    form = Form(Trickle(raw, step), ctype, len(raw))  # type: ignore[arg-type]
    assert form.until_file() and form.filename == "x-1.0.tar.gz"
    got = b""
    while chunk := form.read(1 << 20):
        got += chunk
    assert got == body
    normalized = {k: v.replace("\r\n", "\n").replace("\r", "\n") for k, v in fields.items()}
    assert {k: v.replace("\r\n", "\n").replace("\r", "\n") for k, v in form.finish().items()} == (
        normalized
    )


def test_a_truncated_form_is_an_error() -> None:
    raw, ctype = encode({"name": "x"}, "x-1.0.tar.gz", b"a" * 1000)
    form = Form(io.BytesIO(raw[:-200]), ctype, None)
    assert form.until_file()
    with pytest.raises(FormError, match="truncated"):
        while form.read(1 << 20):
            pass
    with pytest.raises(FormError, match="multipart/form-data"):
        Form(io.BytesIO(b""), "application/json", 0)


@given(
    name=st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
    other=st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
    filename=st.text(min_size=1, max_size=300),
)
def test_every_token_of_an_index_starts_with_its_prefix_and_no_other(
    name: str, other: str, filename: str
) -> None:
    ix, iy = model.Index(name, None, ()), model.Index(other, None, ())
    tok = keys.token(ix.key("0" * 64, filename))
    assert tok.startswith(ix.token_prefix) and tok.startswith(model.PRIVATE_TOKEN_PREFIX)
    assert tok.startswith(iy.token_prefix) == (name == other)
    assert keys.decode_token(tok) == ix.key("0" * 64, filename)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("s3cret\n", "s3cret"), ("s3cret\r\nignored\n", "s3cret"), ("with space", "with space")],
)
def test_the_password_is_the_first_line(text: str, expected: str) -> None:
    assert users.password_from(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [("\n", "no password"), ("", "no password"), ("a\tb\n", "control"), ("x" * 73, "72 bytes")],
)
def test_passwords_refused(text: str, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        users.password_from(text)


def test_users_file_and_per_index_files(tmp_path: Path) -> None:
    lay = Layout(tmp_path / "data").ensure()
    model.save(
        lay,
        [
            model.Index("team", ("alice",), ("ci",)),
            model.Index("pub", None, ("ci",)),
            model.Index("closed", (), ()),
        ],
    )
    assert users.set_password(lay, "ci", "one", cost=4, create=True)
    assert users.set_password(lay, "alice", "two", cost=4, create=True)
    assert not users.set_password(lay, "ci", "three", cost=4, create=True)  # replaced
    lines = users.users_file(lay).read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["alice", "ci"]
    assert all(line.split(":", 1)[1].startswith("$2b$04$") for line in lines)
    assert users.users_file(lay).stat().st_mode & 0o777 == 0o600
    auth = lay.state / "auth"
    assert sorted(p.name for p in auth.iterdir()) == [
        "closed.read", "pub.write", "team.read", "team.write",
    ]  # fmt: skip
    assert [x.split(":")[0] for x in (auth / "team.read").read_text().splitlines()] == [
        "alice", "ci",
    ]  # fmt: skip
    assert (auth / "closed.read").read_text() == ""
    ix = model.load(lay)["team"]
    assert users.check_write(lay, ix, "ci", "three")
    assert not users.check_write(lay, ix, "ci", "one")
    assert not users.check_write(lay, ix, "alice", "two")
    assert [(u.name, u.reads, u.writes) for u in users.listing(lay)] == [
        ("alice", ("team",), ()),
        ("ci", ("team",), ("team", "pub")),
    ]
    users.remove(lay, "alice")
    assert "alice" not in (auth / "team.read").read_text()
    with pytest.raises(users.NoSuchUser):
        users.remove(lay, "alice")
    with pytest.raises(UsageError, match="user name"):
        users.set_password(lay, "bad:name", "x", cost=4, create=True)


def test_users_cli_reads_stdin_and_lists(tmp_path: Path) -> None:
    data = str(tmp_path / "d")
    r = run_withcache("users", "add", "ci", "--cost", "4", "--data", data, input="pw\n")
    assert r.returncode == 0 and "added ci" in r.stderr
    r = run_withcache("users", "add", "ci", "--cost", "4", "--data", data, input="")
    assert r.returncode == 2 and "no password on standard input" in r.stderr
    r = run_withcache("users", "list", "--json", "--data", data)
    assert r.returncode == 0 and '"name": "ci"' in r.stdout
    r = run_withcache("users", "add", "ci", "--cost", "3", "--data", data, input="pw\n")
    assert r.returncode == 2 and "--cost must be 4 to 16" in r.stderr


def test_system_snippet_with_indexes_passes_nginx_t(tmp_path: Path) -> None:
    """The server block a system nginx includes, with a restricted, an open and a
    read-only index: nginx -t accepts it (locations, maps, auth files, the proxy)."""

    data = tmp_path / "data"
    lay = Layout(data).ensure()
    model.save(
        lay,
        [
            model.Index("team", ("alice",), ("ci",), "mirror"),
            model.Index("pub", None, ("ci",)),
            model.Index("docs-only", None, ()),
        ],
    )
    r = run_withcache(
        "nginx-config", "--data", str(data), "--listen", "127.0.0.1:8099", "--max-upload", "1G"
    )
    assert r.returncode == 0, r.stderr
    assert "client_max_body_size 1073741824;" in r.stdout
    assert '"~^POST /team/?(?:\\?.*)?$" ok;' in r.stdout
    assert "POST /docs-only/" not in r.stdout  # no writers: no upload URL
    check_server_block(tmp_path, r.stdout)
