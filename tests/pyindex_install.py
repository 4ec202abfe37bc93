"""Run real pip and uv against one index only, into fresh environments.

This machine configures pip globally (PIP_FIND_LINKS, extra indexes in pip.conf),
so a test that proves where a package came from must shut all of that out:
`pip --isolated` ignores PIP_* variables and the user's config, PIP_CONFIG_FILE
set to /dev/null makes pip skip even the global and site config files, and
`uv --no-config` plus an environment without UV_* does the same for uv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env["PIP_CONFIG_FILE"] = os.devnull  # read despite --isolated: skips every config file
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def uv_bin() -> str:
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        import shutil

        found = shutil.which("uv")
        if not found:
            pytest.skip("uv is not installed (pip install uv)")
        return found


def run(cmd: list[str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=timeout)


def pip_venv(path: Path) -> Path:
    """A fresh venv without pip of its own: the host's pip installs into it (--python)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path / "bin" / "python"


def pip_install(python: Path, index: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run(
        [
            sys.executable, "-m", "pip", "--python", str(python), "--isolated",
            "install", "--no-cache-dir", "--index-url", index, *args,
        ]
    )  # fmt: skip


def uv_venv(path: Path) -> Path:
    r = run([uv_bin(), "venv", "--no-config", "--quiet", "--python", sys.executable, str(path)])
    assert r.returncode == 0, r.stderr
    return path / "bin" / "python"


def uv_install(
    python: Path, index: str, cache: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return run(
        [
            uv_bin(), "pip", "install", "--no-config", "--python", str(python),
            "--cache-dir", str(cache), "--index-url", index, *args,
        ]
    )  # fmt: skip


def installed(python: Path) -> dict[str, str]:
    """{normalised name: version} of what a venv holds."""
    code = (
        "import importlib.metadata as m, json, re;"
        "print(json.dumps({re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(): d.version"
        " for d in m.distributions()}))"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    found: dict[str, str] = json.loads(out.stdout)
    found.pop("pip", None)
    return found
