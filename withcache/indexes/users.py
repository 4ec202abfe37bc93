"""Users and passwords for the private indexes, in files nginx's auth_basic reads.

state/users.htpasswd holds every user's bcrypt hash (`name:$2b$...`), one per line.
Debian's nginx checks such hashes with libxcrypt's crypt() (tests/test_users.py runs
the real nginx on them). From it and the published definitions, withcache writes one
file per restricted index and access (state/auth/<index>.read, <index>.write): nginx
reads them on every request, so a new user, a new password or a changed list takes
effect without a reload.

nginx hashes the password on every request it authenticates, inside its event loop,
so the cost is a trade: 10 (about 50 ms per request here) by default; `--cost` trades
it against throughput (a random CI secret loses nothing at 6).
"""

from __future__ import annotations

import grp
import os
from collections.abc import Iterable
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from withcache import atomic, lock
from withcache.errors import UsageError, WithcacheError
from withcache.indexes.config import user_problem
from withcache.indexes.model import Index
from withcache.indexes.model import load as load_indexes
from withcache.layout import Layout

DEFAULT_COST = 10
MIN_COST, MAX_COST = 4, 16
MAX_PASSWORD = 72  # bcrypt uses the first 72 bytes; longer ones are refused, not cut
NGINX_GROUPS = ("www-data", "nginx", "nobody", "nogroup")


class NoSuchUser(WithcacheError):
    exit_code = 2


@dataclass(frozen=True)
class User:
    """A user and the indexes the published definitions let them use."""

    name: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]


def users_file(layout: Layout) -> Path:
    return layout.state / "users.htpasswd"


def auth_dir(layout: Layout) -> Path:
    return layout.state / "auth"


def auth_file(layout: Layout, index: str, access: str) -> Path:
    """state/auth/<index>.read or .write: the users nginx lets in, with their hashes."""
    return auth_dir(layout) / f"{index}.{access}"


def read_hashes(path: Path) -> dict[str, str]:
    """name -> hash from an htpasswd file (blank lines and comments skipped)."""
    out: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        name, sep, h = line.partition(":")
        if sep and name and not name.startswith("#"):
            out[name] = h
    return out


def password_from(text: str) -> str:
    """The password in what was piped to us: the first line, without its line ending."""
    first = text.split("\n", 1)[0].removesuffix("\r")
    if not first:
        raise UsageError("no password on standard input (pipe it in: printf '%s\\n' ... |)")
    if any(ord(c) < 32 or ord(c) == 127 for c in first):
        raise UsageError("the password contains a control character")
    if len(first.encode()) > MAX_PASSWORD:
        raise UsageError(f"the password is longer than {MAX_PASSWORD} bytes (bcrypt's limit)")
    return first


def hash_password(password: str, cost: int = DEFAULT_COST) -> str:
    if not MIN_COST <= cost <= MAX_COST:
        raise UsageError(f"--cost must be {MIN_COST} to {MAX_COST}, got {cost}")
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode("ascii")


def verify(hashed: str | None, password: str) -> bool:
    """True when `password` matches `hashed`; a missing user costs a hash too."""
    if hashed is None or not hashed.startswith(("$2b$", "$2y$", "$2a$")):
        bcrypt.checkpw(password.encode()[:MAX_PASSWORD], _DUMMY)
        return False
    try:
        return bcrypt.checkpw(password.encode()[:MAX_PASSWORD], hashed.encode("ascii"))
    except ValueError:
        return False


_DUMMY = bcrypt.hashpw(b"withcache", bcrypt.gensalt(MIN_COST))


def set_password(layout: Layout, name: str, password: str, *, cost: int, create: bool) -> bool:
    """Create (`create`) or replace a user's password; True if the user is new."""
    problem = user_problem(name)
    if problem:
        raise UsageError(problem)
    hashed = hash_password(password, cost)
    with _locked(layout):
        users = read_hashes(users_file(layout))
        new = name not in users
        if new and not create:
            raise NoSuchUser(f"no user {name!r}; create it with `withcache users add {name}`")
        users[name] = hashed
        _write_users(layout, users)
        write_auth_files(layout, users=users)
    return new


def remove(layout: Layout, name: str) -> None:
    with _locked(layout):
        users = read_hashes(users_file(layout))
        if name not in users:
            raise NoSuchUser(f"no user {name!r}")
        del users[name]
        _write_users(layout, users)
        write_auth_files(layout, users=users)


def listing(layout: Layout) -> list[User]:
    users = read_hashes(users_file(layout))
    indexes = load_indexes(layout).values()
    return [
        User(
            name,
            tuple(ix.name for ix in indexes if not ix.open and name in ix.readers),
            tuple(ix.name for ix in indexes if name in ix.write),
        )
        for name in sorted(users)
    ]


def write_auth_files(
    layout: Layout,
    indexes: Iterable[Index] | None = None,
    users: dict[str, str] | None = None,
) -> None:
    """Bring state/auth/ in line with the users and the definitions: one file per
    restricted index for reading, one per index with writers; stale ones removed."""
    if indexes is None:
        indexes = load_indexes(layout).values()
    if users is None:
        users = read_hashes(users_file(layout))
    d = auth_dir(layout)
    d.mkdir(parents=True, exist_ok=True)
    group = nginx_group()
    _share(d, group, 0o750)
    wanted: dict[str, str] = {}
    for ix in indexes:
        if not ix.open:
            wanted[f"{ix.name}.read"] = _htpasswd(ix.readers, users)
        if ix.write:
            wanted[f"{ix.name}.write"] = _htpasswd(ix.write, users)
    for name, text in wanted.items():
        _write_shared(d / name, text.encode(), group)
    for stale in d.iterdir():
        if stale.name not in wanted and stale.suffix in {".read", ".write"}:
            with suppress(FileNotFoundError):
                stale.unlink()


def check_write(layout: Layout, index: Index, user: str, password: str) -> bool:
    """The upload service's own check, against the file nginx used: the service never
    trusts a header for who is uploading."""
    if not index.may_write(user):
        return False
    hashes = read_hashes(auth_file(layout, index.name, "write"))
    return verify(hashes.get(user), password)


def nginx_group() -> int | None:
    """The group nginx's workers run in on Debian (www-data), when it exists."""
    for name in NGINX_GROUPS:
        with suppress(KeyError):
            return grp.getgrnam(name).gr_gid
    return None


def _htpasswd(names: Iterable[str], users: dict[str, str]) -> str:
    # a listed user without a password yet is simply absent: nobody can log in as them
    return "".join(f"{n}:{users[n]}\n" for n in names if n in users)


def _write_users(layout: Layout, users: dict[str, str]) -> None:
    text = "".join(f"{n}:{h}\n" for n, h in sorted(users.items()))
    atomic.write(users_file(layout), text.encode(), mode=0o600)


def _write_shared(path: Path, data: bytes, group: int | None) -> None:
    """Readable by nginx's workers: by group when we may set it, else by everyone."""
    if group is not None:
        try:
            atomic.write(path, data, mode=0o640, group=group)
            return
        except PermissionError:  # not root and not in that group
            pass
    atomic.write(path, data, mode=0o644)


def _share(d: Path, group: int | None, mode: int) -> None:
    try:
        if group is not None:
            os.chown(d, -1, group)
            d.chmod(mode)
            return
    except PermissionError:
        pass
    d.chmod(0o755)


def _locked(layout: Layout) -> AbstractContextManager[None]:
    """One writer of the users file at a time (two `users add` at once keep both)."""
    return lock.hold(layout.state / "users.lock", "users file busy", wait=True)
