"""A throwaway certificate authority on loopback, made with the real `openssl`.

Labs trust an internal CA for their cache-host; the tests do the same with one made
per session: `ca.pem` signs `cert.pem` (127.0.0.1, ::1, localhost), which nginx serves.
`rogue.pem` is a self-signed certificate for the same names that nothing trusts.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

NAMES = "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost"


@dataclass(frozen=True)
class CA:
    ca: Path  # the CA certificate a client trusts (CURL_CA_BUNDLE, --cacert, --ca-certificate)
    cert: Path  # the server certificate, signed by `ca`
    key: Path
    rogue_cert: Path  # self-signed for the same names: trusted by nobody
    rogue_key: Path


def make_ca(d: Path) -> CA:
    """Create the CA and both server certificates under `d` (EC P-256: fast handshakes)."""
    if not shutil.which("openssl"):
        raise RuntimeError("openssl is not installed (apt-get install openssl)")
    d.mkdir(parents=True, exist_ok=True)
    (d / "names.ext").write_text(NAMES + "\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"]
    steps = [
        ["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=test CA"],
        ["req", *ec, "-keyout", "key.pem", "-out", "cert.csr", "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", "cert.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-days", "2",
         "-CAcreateserial", "-out", "cert.pem", "-extfile", "names.ext"],
        ["req", "-x509", *ec, "-keyout", "rogue.key", "-out", "rogue.pem",
         "-subj", "/CN=127.0.0.1", "-addext", NAMES],
    ]  # fmt: skip
    for step in steps:
        subprocess.run(["openssl", *step], cwd=d, check=True, capture_output=True, timeout=60)
    for p in d.iterdir():
        p.chmod(0o644)  # nginx's master reads the keys; its workers never do
    return CA(d / "ca.pem", d / "cert.pem", d / "key.pem", d / "rogue.pem", d / "rogue.key")
