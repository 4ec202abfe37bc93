"""`withcache add`: entries appended as text, every comment kept, check's own messages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import run_withcache
from withcache.add import NewEntry, append_entries
from withcache.cli import main
from withcache.misses import MissRow, snippet

COMMENTED = """\
# CUDA and friends. Reviewed by the GPU team.
defaults:
  keep_query: false   # queries are signatures here

artifacts:
  # the runfile everybody needs
  - https://developer.download.nvidia.com/compute/cuda/12.6.3/cuda_12.6.3_linux.run

  - url: https://repo.radeon.com/amdgpu-install/6.2.4/amdgpu-install_6.2.60204-1_all.deb
    sha256: 2d6e7f2f3a19e07d7e1a2e5f60cc5d1f5c29e3f36b4d2b4b7dfd6a1b0a4c8e91  # pinned
  # - https://vendor.example/disabled-for-now.bin

# trailing words
"""

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """The CLI in-process, run from a checkout-like directory holding manifests/."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "manifests").mkdir()

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def comments(text: str) -> list[str]:
    return [line.split("#", 1)[1] for line in text.splitlines() if "#" in line]


def test_add_keeps_every_comment_and_check_passes(tmp_path: Path, cli: Cli) -> None:
    m = tmp_path / "manifests" / "gpu.yaml"
    m.write_text(COMMENTED)
    new = "https://vendor.example/doca/doca-host_2.9.1_amd64.deb"
    code, _, err = cli("add", "-m", str(m), new)
    assert code == 0, err
    text = m.read_text()
    assert comments(text) == comments(COMMENTED)
    assert text.startswith(COMMENTED.split("  # - https")[0])  # untouched up to the new line
    assert f"  - {new}\n" in text
    r = run_withcache("check", "-v", str(tmp_path / "manifests"))  # the real `check`
    assert r.returncode == 0, r.stderr
    assert "3 artifacts" in r.stdout


def test_default_file_is_created_with_a_header(tmp_path: Path, cli: Cli) -> None:
    code, _, err = cli("add", "https://vendor.example/a.bin", "https://vendor.example/b.bin")
    assert code == 0, err
    text = (tmp_path / "manifests" / "added.yaml").read_text()
    assert text.startswith("# URLs added with `withcache add`")
    assert text.endswith(
        "artifacts:\n  - https://vendor.example/a.bin\n  - https://vendor.example/b.bin\n"
    )
    assert "added 2 entries" in err
    assert cli("check")[0] == 0


def test_sha256_pins_an_entry(tmp_path: Path, cli: Cli) -> None:
    h = "5E2B" + "0" * 60
    assert cli("add", "--sha256", "sha256:" + h, "https://vendor.example/a.bin")[0] == 0
    text = (tmp_path / "manifests" / "added.yaml").read_text()
    assert "  - url: https://vendor.example/a.bin\n    sha256: 5e2b" + "0" * 60 + "\n" in text
    assert cli("check")[0] == 0


def check_message(tmp_path: Path, cli: Cli, url: str) -> str:
    """What `withcache check` says about a manifest entry with this URL."""
    probe = tmp_path / "probe.yaml"
    probe.write_text(f'artifacts:\n  - "{url}"\n')
    code, _, err = cli("check", str(probe))
    assert code == 2
    probe.unlink()
    return err.split(f"{probe}:2: ", 1)[1].strip()


@pytest.mark.parametrize(
    "url",
    [
        "ftp://vendor.example/a.bin",
        "https://user:pw@vendor.example/a.bin",
        "https://vendor.example/a b.bin",
        "javascript:alert(1)",
        "vendor.example/a.bin",
    ],
)
def test_invalid_urls_are_refused_with_checks_message(tmp_path: Path, cli: Cli, url: str) -> None:
    m = tmp_path / "manifests" / "gpu.yaml"
    m.write_text(COMMENTED)
    expected = check_message(tmp_path, cli, url)
    code, _, err = cli("add", "-m", str(m), "https://vendor.example/fine.bin", url)
    assert code == 2
    assert err == f"withcache: error: {url}: {expected}\n"
    assert m.read_text() == COMMENTED  # all or nothing


def check_says(cli: Cli, where: str) -> str:
    """`withcache check`'s message for the problem it reports at `where` (file:line)."""
    code, _, err = cli("check")
    assert code == 2
    (line,) = [x for x in err.splitlines() if f" {where}: " in x]
    return line.split(f" {where}: ", 1)[1]


def test_duplicates_are_refused_with_checks_message(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "manifests" / "gpu.yaml").write_text(COMMENTED)
    dup = "https://developer.download.nvidia.com/compute/cuda/12.6.3/cuda_12.6.3_linux.run"
    code, _, err = cli("add", dup)
    assert code == 2
    assert not (tmp_path / "manifests" / "added.yaml").exists()
    # the same mistake made by hand in a manifest, as check reports it
    (tmp_path / "manifests" / "more.yaml").write_text(f"artifacts:\n  - {dup}\n")
    expected = check_says(cli, "manifests/more.yaml:2")
    assert "manifests/gpu.yaml:7" in expected
    assert err == f"withcache: error: {dup}: {expected}\n"


def test_a_key_collision_once_the_query_is_dropped_is_refused(tmp_path: Path, cli: Cli) -> None:
    assert cli("add", "https://vendor.example/dl?file=a")[0] == 0
    code, _, err = cli("add", "https://vendor.example/dl?file=b")
    assert code == 2
    (tmp_path / "manifests" / "more.yaml").write_text(
        "artifacts:\n  - https://vendor.example/dl?file=b\n"
    )
    expected = check_says(cli, "manifests/more.yaml:2")
    assert "manifests/added.yaml:4" in expected
    assert err == f"withcache: error: https://vendor.example/dl?file=b: {expected}\n"
    (tmp_path / "manifests" / "more.yaml").unlink()
    assert cli("add", "--keep-query", "https://vendor.example/dl2?file=b")[0] == 0
    assert cli("check")[0] == 0


def test_the_same_url_twice_in_one_call_is_refused(cli: Cli) -> None:
    code, _, err = cli("add", "https://vendor.example/x", "HTTPS://VENDOR.example:443/x")
    assert code == 2
    assert err == (
        "withcache: error: HTTPS://VENDOR.example:443/x: duplicate URL, given twice here\n"
    )


def test_a_duplicate_inside_the_target_file_names_that_file(tmp_path: Path, cli: Cli) -> None:
    m = tmp_path / "manifests" / "gpu.yaml"
    m.write_text(COMMENTED)
    dup = "https://developer.download.nvidia.com/compute/cuda/12.6.3/cuda_12.6.3_linux.run"
    code, _, err = cli("add", "-m", str(m), dup)
    assert code == 2
    assert err.startswith(f"withcache: error: {dup}: ") and f"{m}:7" in err
    assert ".tmp" not in err


def test_a_flow_list_is_not_rewritten(tmp_path: Path, cli: Cli) -> None:
    m = tmp_path / "manifests" / "flow.yaml"
    m.write_text("artifacts: [https://vendor.example/a.bin]  # compact\n")
    code, _, err = cli("add", "-m", str(m), "https://vendor.example/b.bin")
    assert code == 2 and "not a block list" in err
    assert m.read_text() == "artifacts: [https://vendor.example/a.bin]  # compact\n"


def test_file_mode_is_kept(tmp_path: Path, cli: Cli) -> None:
    m = tmp_path / "manifests" / "gpu.yaml"
    m.write_text(COMMENTED)
    m.chmod(0o664)
    assert cli("add", "-m", str(m), "https://vendor.example/new.bin")[0] == 0
    assert m.stat().st_mode & 0o777 == 0o664


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("", "artifacts:\n  - https://n.example/x\n"),
        ("# just words\n", "# just words\nartifacts:\n  - https://n.example/x\n"),
        ("artifacts:\n", "artifacts:\n  - https://n.example/x\n"),
        ("artifacts: ~  # none yet\n", "artifacts:  # none yet\n  - https://n.example/x\n"),
        ("artifacts: []\nauto: {}\n", "artifacts:\n  - https://n.example/x\nauto: {}\n"),
        (
            "artifacts:\n- https://a.example/1\n# end\n",
            "artifacts:\n- https://a.example/1\n- https://n.example/x\n# end\n",
        ),
        (
            "artifacts:\n    - url: https://a.example/1\n      headers:\n        A: b\n\n# c\n",
            "artifacts:\n    - url: https://a.example/1\n      headers:\n        A: b\n"
            "    - https://n.example/x\n\n# c\n",
        ),
        (
            "artifacts:\r\n  - https://a.example/1\r\n",
            "artifacts:\r\n  - https://a.example/1\r\n  - https://n.example/x\r\n",
        ),
        (
            "artifacts:\n  - https://a.example/1",  # no final newline
            "artifacts:\n  - https://a.example/1\n  - https://n.example/x\n",
        ),
    ],
)
def test_append_entries_layouts(before: str, after: str) -> None:
    assert append_entries(before, [NewEntry("https://n.example/x")])[0] == after


def test_urls_that_yaml_would_misread_are_quoted(tmp_path: Path, cli: Cli) -> None:
    odd = "https://vendor.example/a #b"  # not addable (whitespace), but quoted if it were
    assert append_entries("", [NewEntry(odd)])[0] == f'artifacts:\n  - "{odd}"\n'
    tricky = "https://vendor.example/[x]{y}&z*'q'"
    assert cli("add", tricky)[0] == 0
    assert cli("check", "-v")[1] == "1 manifest files, 1 artifacts: ok\n"


def test_misses_yaml_snippet_is_a_valid_manifest(tmp_path: Path, cli: Cli) -> None:
    rows = [
        MissRow("k1", "https://vendor.example/a.run", "url", 3, 0, 0, 1, "", "open"),
        MissRow("k2", "https://vendor.example/[odd].run", "url", 2, 0, 0, 1, "", "open"),
        MissRow("k3", "https://u:p@vendor.example/c.run", "url", 1, 0, 0, 1, "", "open"),
    ]
    (tmp_path / "manifests" / "review.yaml").write_text(snippet(rows))
    code, out, err = cli("check", "-v")
    assert code == 0, err
    assert "2 artifacts" in out
