"""GLEP 75, as Gentoo's mirrors use it: `filename-hash BLAKE2B 8`.

A distfile named F lives at distfiles/<h>/F, where <h> is the first 8 bits of
BLAKE2B-512 of F (UTF-8), as two lower-case hex digits. Portage reads the mirror's
distfiles/layout.conf first to learn that; without it, it would ask for the flat
path distfiles/F, which Gentoo's own mirrors no longer have.
"""

from __future__ import annotations

import hashlib

LAYOUT = "gentoo"
DISTFILES = "distfiles"
LAYOUT_CONF_PATH = f"{DISTFILES}/layout.conf"
# The [structure] section: key 0 is the preferred (here the only) structure.
LAYOUT_CONF = "[structure]\n0=filename-hash BLAKE2B 8\n"


def hash_dir(filename: str) -> str:
    """The two hex digits of `filename`'s directory: BLAKE2B-512, first 8 bits."""
    return hashlib.blake2b(filename.encode("utf-8")).hexdigest()[:2]


def distfile_path(filename: str) -> str:
    """distfiles/<h>/<filename>: where a bare distfile name lives on the mirror."""
    return f"{DISTFILES}/{hash_dir(filename)}/{filename}"


def misplaced(path: str) -> str | None:
    """For a path under distfiles/<2 hex>/, where GLEP 75 would put its file instead
    (None when it is right, or when the path is not of that shape)."""
    parts = path.split("/")
    if len(parts) != 3 or parts[0] != DISTFILES or len(parts[1]) != 2:
        return None
    right = distfile_path(parts[2])
    return None if right == path else right
