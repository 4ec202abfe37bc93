"""A replica of a center with private indexes: the same read rules and users, the pages
and files the center serves, and no uploads (they belong to the center)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests

from tests import indexes_e2e
from tests.conftest import run_withcache, start_nginx, stop_nginx
from tests.trees import hrefs

pytestmark = pytest.mark.skipif(not shutil.which("rsync"), reason="rsync is not installed")


def test_a_replica_serves_private_indexes_read_only_with_the_centers_users(
    tmp_path: Path,
) -> None:
    tmp_path.chmod(0o755)
    (tmp_path / "c").mkdir()
    center = indexes_e2e.start(tmp_path / "c")
    try:
        filename, body = indexes_e2e.wheel("wct-secret", "1.0", payload=b"s" * 5000)
        assert center.upload("team", filename, body).status_code == 200
        replica = tmp_path / "replica"
        r = run_withcache("replicate", "--data", str(center.layout.root), str(replica))
        assert r.returncode == 0, r.stderr
        conf = run_withcache("nginx-config", "--data", str(replica)).stdout
        assert "upload" not in conf.lower() or "proxy_pass http://unix:" not in conf
        copy = start_nginx(replica)
        try:
            alice = center.auth("alice")
            assert requests.get(copy.url + "/team/simple/", timeout=5).status_code == 401
            page = requests.get(copy.url + "/team/simple/wct-secret/", auth=alice, timeout=5)
            assert page.status_code == 200 and filename in page.text
            (href,) = [h.split("#")[0] for h in hrefs(page.text) if filename in h]
            assert requests.get(copy.url + href, auth=alice, timeout=5).content == body
            assert requests.get(copy.url + href, timeout=5).status_code == 401
            assert (
                requests.get(copy.url + href, auth=("alice", "wrong"), timeout=5).status_code == 401
            )
            other, other_body = indexes_e2e.wheel("wct-secret", "2.0")
            up = indexes_e2e.upload(copy.url + "/team/", other, other_body, center.auth("ci"))
            assert up.status_code in (403, 405), up.status_code  # no uploads at a replica
            assert not (replica / "run" / "upload.sock").exists()
        finally:
            stop_nginx(copy.proc)
    finally:
        center.stop()
