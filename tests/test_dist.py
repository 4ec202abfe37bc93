"""The installed wheel carries what lives outside the package in the repository:
the nginx templates and the shims (the top-level layout is fixed)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {r.stderr[-400:]}")
    (whl,) = out.glob("*.whl")
    return whl


def test_wheel_contains_templates_and_shims(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "withcache/_nginx/server.conf.j2" in names
    assert "withcache/_nginx/nginx.conf.j2" in names
    assert "withcache/templates/index.html" in names
    assert "withcache/_shims/curlwithcache" in names


def test_installed_wheel_checks_and_renders(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, timeout=300
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    m = tmp_path / "m.yaml"
    m.write_text("artifacts:\n  - https://vendor.example/a.bin\n")
    exe = venv / "bin" / "withcache"
    r = subprocess.run(
        [str(exe), "check", "-v", str(m)], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert r.returncode == 0 and "1 artifacts: ok" in r.stdout, r.stderr
    r = subprocess.run(
        [str(exe), "nginx-config", "--data", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 0 and "location ^~ /b/" in r.stdout, r.stderr
    located = subprocess.run(
        [str(py), "-c", "import withcache.nginx as n; print(n.templates_dir())"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    ).stdout
    assert "site-packages/withcache/_nginx" in located
