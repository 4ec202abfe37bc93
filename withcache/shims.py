"""Install the POSIX sh shims (`curlwithcache`, `wgetwithcache`) into a directory.

The two names are one script: it picks its tool by the name it runs under. With
`shadow`, `curl` and `wget` links to them are made too, so that a directory put
first on PATH makes every script use the cache unchanged (the shims then find the
real tools further down PATH, never themselves).
"""

from __future__ import annotations

import os
from pathlib import Path

from withcache import atomic

SHIMS = {"curlwithcache": "curl", "wgetwithcache": "wget"}  # shim -> the tool it shadows
MARK = b"curlwithcache / wgetwithcache"  # in the shim's first lines: "this file is ours"


def shim_source() -> Path:
    """The shim script: inside the installed package, else in the source tree."""
    here = Path(__file__).resolve().parent
    for d in (here / "_shims", here.parent / "shims"):
        if (d / "curlwithcache").is_file():
            return d / "curlwithcache"
    raise FileNotFoundError("the shim script (shims/curlwithcache) is not installed")


def is_ours(path: Path) -> bool:
    """A shim we installed (a copy, or a link to one)."""
    try:
        with path.open("rb") as f:
            return MARK in f.read(512)
    except OSError:
        return False


def install_shims(dest_dir: Path, shadow: bool) -> list[Path]:
    """Put curlwithcache and wgetwithcache (mode 0755) into dest_dir, and with
    shadow also curl -> curlwithcache and wget -> wgetwithcache (relative links).
    Returns the paths written. Re-running replaces what an earlier run put there;
    a `curl` or `wget` that is not ours is never overwritten (FileExistsError):
    replacing the real tool would leave the shim nothing to run.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    body = shim_source().read_bytes()
    if shadow:  # check everything before changing anything
        for tool in SHIMS.values():
            if not _replaceable(dest_dir / tool):
                raise FileExistsError(
                    f"{dest_dir / tool} exists and is not a withcache shim; not replacing it"
                )
    written = []
    for name in SHIMS:
        atomic.write(dest_dir / name, body, mode=0o755)  # a running shim keeps the old file
        written.append(dest_dir / name)
    if shadow:
        for name, tool in SHIMS.items():
            written.append(_link_atomically(dest_dir / tool, name))
    return written


def _replaceable(path: Path) -> bool:
    """Absent, our link, or our shim."""
    if path.is_symlink():
        return os.readlink(path) in SHIMS or is_ours(path)
    return not path.exists() or is_ours(path)


def _link_atomically(path: Path, target: str) -> Path:
    tmp = path.with_name(f".{path.name}.link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, path)
    return path
