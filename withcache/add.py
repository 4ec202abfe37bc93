"""`withcache add`: append URLs to a manifest as text, keeping its comments and layout.

A YAML round trip through a parser would drop every comment, and comments are what
reviewers read. So the file is edited as text: the new entries go right after the
last item of `artifacts:`, with that list's own indentation. The result is then
validated exactly as `withcache check` would, together with the other manifests, and
written (atomically) only if it passes; problems come out in check's own words.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import yaml

from withcache import atomic, keys, manifest
from withcache.errors import ManifestError, Problem, UsageError
from withcache.mirrors.paths import path_problem
from withcache.misses import yaml_scalar
from withcache.yamlnodes import SHA256

HEADER = (
    "# URLs added with `withcache add`. Reviewed by pull request like any manifest;\n"
    "# move entries to a better-named file whenever you like.\n"
)


class _Item(Protocol):
    """Something appended to a manifest list: what it is called in messages, its lines."""

    @property
    def url(self) -> str: ...

    def lines(self, dash: int) -> list[str]: ...


@dataclass(frozen=True)
class NewEntry:
    url: str
    sha256: str | None = None
    keep_query: bool = False

    def lines(self, dash: int) -> list[str]:
        pad = " " * dash
        if not self.sha256 and not self.keep_query:
            return [f"{pad}- {yaml_scalar(self.url)}"]
        out = [f"{pad}- url: {yaml_scalar(self.url)}"]
        if self.sha256:
            out.append(f"{pad}  sha256: {self.sha256}")
        if self.keep_query:
            out.append(f"{pad}  keep_query: true")
        return out


def add(target: Path, entries: Sequence[NewEntry], against: Sequence[Path] = ()) -> list[str]:
    """Append `entries` to `target` (created if missing); return their keys.

    `against`: the other manifests (files or directories) duplicates are checked
    against. Raises ManifestError with check's messages, and writes nothing, if any
    entry is refused or the manifests were already broken.
    """
    _refuse_obvious(entries)
    old = target.read_text(encoding="utf-8") if target.exists() else HEADER
    new, first_line = append_entries(old, entries)
    others = [
        p
        for p in manifest.manifest_files([a for a in against if a.exists()])
        if not _same_file(p, target)
    ]
    _validate(target, new, first_line, entries, others)
    _write(target, new)
    return [keys.normalize(e.url, e.keep_query) for e in entries]


def _refuse_obvious(entries: Sequence[NewEntry]) -> None:
    """Bad URLs and hashes, said as check says them, before touching any text."""
    problems = []
    seen: set[str] = set()
    for e in entries:
        why = manifest.url_problem(e.url)
        if why:
            problems.append(Problem(e.url, 0, why))
        elif (key := keys.normalize(e.url, e.keep_query)) in seen:
            problems.append(Problem(e.url, 0, "duplicate URL, given twice here"))
        else:
            seen.add(key)
        if e.sha256 is not None and not SHA256.match(e.sha256):
            problems.append(Problem(e.url, 0, f"sha256 must be 64 hex digits, got {e.sha256!r}"))
    if problems:
        raise _Refused(problems)


class _Refused(ManifestError):
    """Problems of URLs not yet in any file: Problem(URL, 0, message) prints 'URL: message'."""


def _validate(
    target: Path, text: str, first_line: int, entries: Sequence[_Item], others: list[Path]
) -> None:
    """Load the candidate text with the other manifests; map problems to the new URLs."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            manifest.load([*others, Path(tmp)])
        except ManifestError as exc:
            raise _Refused(_relocate(exc.problems, tmp, target, first_line, entries)) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _relocate(
    problems: list[Problem], tmp: str, target: Path, first: int, entries: Sequence[_Item]
) -> list[Problem]:
    """Problems on the new lines become 'URL: message'; others keep file:line."""
    starts = []
    line = first
    for e in entries:
        starts.append((line, e))
        line += len(e.lines(0))
    out = []
    for p in problems:
        if p.file != tmp:
            out.append(p)
            continue
        message = p.message.replace(tmp, str(target))
        owner = next((e for start, e in reversed(starts) if p.line >= start), None)
        if owner is not None and p.line >= first:
            out.append(Problem(owner.url, 0, message))
        else:
            out.append(Problem(str(target), p.line, message))
    return out


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _write(target: Path, text: str) -> None:
    """Replace the file atomically, keeping its permissions."""
    mode = target.stat().st_mode & 0o7777 if target.exists() else 0o644
    atomic.write_text(target, text, mode=mode)


# --- the text edit (pure) ----------------------------------------------------------------


def _parse(text: str) -> tuple[yaml.Node | None, str]:
    """The manifest's node tree (kept as text elsewhere: only marks are used) and its
    newline; a UsageError when it does not parse."""
    nl = "\r\n" if "\r\n" in text else "\n"
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader), nl
    except yaml.YAMLError as exc:
        raise UsageError(f"cannot parse the manifest to add to: {exc}") from None


def append_entries(text: str, entries: Sequence[NewEntry]) -> tuple[str, int]:
    """`text` with the entries appended to its artifacts list; and the 1-based line of
    the first new entry. Raises UsageError when the layout cannot be extended as text."""
    root, nl = _parse(text)
    if root is None:
        return _at_end(text, entries, nl, with_key=True)
    if not isinstance(root, yaml.MappingNode):
        raise UsageError("the manifest to add to is not a mapping (expected 'artifacts:')")
    pair = _child(root, "artifacts")
    if pair is None:
        return _at_end(text, entries, nl, with_key=True)
    done = _extend_list(text, pair, entries, 2, nl)
    if done is None:
        raise UsageError(
            "'artifacts' is not a block list (one '- URL' per line); make it one, then add"
        )
    return done


def _extend_list(
    text: str, pair: tuple[yaml.Node, yaml.Node], items: Sequence[_Item], dash: int, nl: str
) -> tuple[str, int] | None:
    """Append to the list under `pair`'s key: after its last item, or as a new block
    list (`dash` deep) where the value is empty; None when it is no list we can extend."""
    key, value = pair
    if isinstance(value, yaml.SequenceNode) and value.value and not value.flow_style:
        return _after_last_item(text, value, items, nl)
    empty_flow = isinstance(value, yaml.SequenceNode) and not value.value
    if empty_flow or (isinstance(value, yaml.ScalarNode) and value.tag.endswith(":null")):
        # `key:`, `key: ~` or `key: []`: drop the token, add a block list
        start, end = value.start_mark.index, value.end_mark.index
        if end > start and value.start_mark.line == key.start_mark.line:
            text = text[:start].rstrip(" ") + text[end:]
        return _insert(text, _line_end(text, key.start_mark.line), items, dash, nl)
    return None


def _at_end(text: str, entries: Sequence[NewEntry], nl: str, *, with_key: bool) -> tuple[str, int]:
    if text and not text.endswith("\n"):
        text += nl
    if with_key:
        text += "artifacts:" + nl
    return _insert(text, len(text), entries, 2, nl)


def _after_last_item(
    text: str, seq: yaml.SequenceNode, entries: Sequence[_Item], nl: str, whose: str = "the list's"
) -> tuple[str, int]:
    first = seq.value[0]
    line_start = text.rfind("\n", 0, first.start_mark.index) + 1
    dash = text.rfind("-", line_start, first.start_mark.index)
    if dash < 0:
        raise UsageError(f"cannot find {whose} '-' to line up with")
    end = _deepest_end(seq.value[-1])
    return _insert(text, _line_end(text, end.line, end), entries, dash - line_start, nl)


def _deepest_end(node: yaml.Node) -> yaml.Mark:
    """Where a block item's content really ends (a mapping's own end mark can lie past
    comments and blank lines that follow it)."""
    while True:
        if isinstance(node, yaml.MappingNode) and node.value and not node.flow_style:
            node = node.value[-1][1]
        elif isinstance(node, yaml.SequenceNode) and node.value and not node.flow_style:
            node = node.value[-1]
        else:
            return node.end_mark


def _line_end(text: str, line: int, mark: yaml.Mark | None = None) -> int:
    """The index just past the newline of 0-based `line` (or of the mark's line)."""
    if mark is not None and mark.column == 0 and mark.index > 0 and text[mark.index - 1] == "\n":
        return mark.index  # a block scalar's end mark is already at the next line
    idx = 0
    for _ in range(line):
        idx = text.index("\n", idx) + 1
    eol = text.find("\n", idx)
    return len(text) if eol < 0 else eol + 1


def _insert(text: str, at: int, entries: Sequence[_Item], dash: int, nl: str) -> tuple[str, int]:
    if at == len(text) and text and not text.endswith("\n"):
        text += nl
        at = len(text)
    first_line = text.count("\n", 0, at) + 1
    block = "".join(line + nl for e in entries for line in e.lines(dash))
    return text[:at] + block + text[at:], first_line


_HEX = re.compile(r"^(?:sha256:)?[0-9a-fA-F]{64}$")


def normal_sha256(value: str) -> str:
    """Accept `sha256:` prefixes and upper case, as check does."""
    return value.lower().removeprefix("sha256:") if _HEX.match(value) else value


# --- mirror files (`withcache add --mirror NAME PATH...`) --------------------------------


@dataclass(frozen=True)
class NewMirrorFile:
    path: str  # as the operator gave it: a path, or a bare distfile name (layout: gentoo)
    sha256: str | None = None

    @property
    def url(self) -> str:  # what messages call it
        return self.path

    def lines(self, dash: int) -> list[str]:
        pad = " " * dash
        if not self.sha256:
            return [f"{pad}- {self.path}"]
        return [f"{pad}- path: {self.path}", f"{pad}  sha256: {self.sha256}"]


def add_mirror_files(
    mirror: str, files: Sequence[NewMirrorFile], manifests: Sequence[Path]
) -> Path:
    """Append paths to the `files:` of the mirror a manifest under `manifests` (files or
    directories) defines; return that file. Refused with check's messages, writing
    nothing, when a path is bad or already listed, or the manifests were broken."""
    problems = [Problem(f.path, 0, why) for f in files if (why := path_problem(f.path))]
    problems += [
        Problem(f.path, 0, f"sha256 must be 64 hex digits, got {f.sha256!r}")
        for f in files
        if f.sha256 is not None and not SHA256.match(f.sha256)
    ]
    if problems:
        raise _Refused(problems)
    all_files = manifest.manifest_files([p for p in manifests if p.exists()])
    target = next((p for p in all_files if _mirror_node(_compose(p), mirror) is not None), None)
    if target is None:
        where = ", ".join(map(str, manifests)) or "the manifests"
        raise UsageError(
            f"no manifest in {where} defines mirror {mirror!r}; "
            f"add a `mirrors: {mirror}:` section with its sources first"
        )
    old = target.read_text(encoding="utf-8")
    new, first_line = append_mirror_files(old, mirror, files)
    others = [p for p in all_files if not _same_file(p, target)]
    _validate(target, new, first_line, files, others)
    _write(target, new)
    return target


def _compose(path: Path) -> yaml.Node | None:
    try:
        return yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def _child(node: yaml.Node | None, name: str) -> tuple[yaml.Node, yaml.Node] | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    return next(
        ((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == name),
        None,
    )


def _mirror_node(root: yaml.Node | None, mirror: str) -> yaml.MappingNode | None:
    section = _child(root, "mirrors")
    found = _child(section[1], mirror) if section else None
    return found[1] if found and isinstance(found[1], yaml.MappingNode) else None


def append_mirror_files(text: str, mirror: str, files: Sequence[NewMirrorFile]) -> tuple[str, int]:
    """`text` with the paths appended to the mirror's files list; and the 1-based line
    of the first new one. Raises UsageError when the layout cannot be extended as text."""
    root, nl = _parse(text)
    node = _mirror_node(root, mirror)
    if node is None or node.flow_style or not node.value:
        raise UsageError(f"mirror {mirror!r} is not a block mapping; make it one, then add")
    pair = _child(node, "files")
    if pair is None:  # no files: yet: add the key after the mirror's last line
        indent = node.value[0][0].start_mark.column
        end = _deepest_end(node)
        at = _line_end(text, end.line, end)
        head = f"{' ' * indent}files:{nl}"
        text = text[:at] + head + text[at:]
        return _insert(text, at + len(head), files, indent + 2, nl)
    done = _extend_list(text, pair, files, pair[0].start_mark.column + 2, nl)
    if done is None:
        raise UsageError(f"mirror {mirror!r}: 'files' is not a block list (one '- path' per line)")
    return done


# --- python.requirements: `withcache add --python NAME` ----------------------------------


def add_python(
    names: Sequence[str], against: Sequence[Path], target: Path | None = None
) -> tuple[Path, list[str]]:
    """Append project names to a python: section's `requirements` (as text, comments
    kept), so sync resolves them itself: a project taken on demand moves into a
    manifest. The target is `target`, else the manifest whose on_demand admits the
    first name, else the first with a python: section. Returns (file, normalised names).
    Validated with the other manifests like check; nothing is written on a problem."""
    from withcache.pyindex import names as pynames

    wanted: list[str] = []
    for n in names:
        why = pynames.name_problem(n)
        if why:
            raise UsageError(f"{n!r}: {why}")
        if pynames.normalize(n) not in wanted:
            wanted.append(pynames.normalize(n))
    files = manifest.manifest_files([a for a in against if a.exists()])
    target = target or _python_manifest(files, wanted[0])
    text = target.read_text(encoding="utf-8")
    have = _requirement_names(text)
    already = [n for n in wanted if n in have]
    if already:
        raise UsageError(f"{target}: already in python.requirements: {', '.join(already)}")
    new, line = append_requirements(text, wanted)
    others = [p for p in files if not _same_file(p, target)]
    _validate(target, new, line, [], others)
    _write(target, new)
    return target, wanted


def _python_manifest(files: Sequence[Path], project: str) -> Path:
    first: Path | None = None
    for path in files:
        try:
            m = manifest.load([path])
        except ManifestError:
            continue
        for cfg in m.python:
            if cfg.takes(project):
                return path
            first = first or path
    if first is None:
        raise UsageError("no manifest has a python: section; name one with -m FILE")
    return first


def _requirement_names(text: str) -> set[str]:
    from packaging.requirements import InvalidRequirement, Requirement

    from withcache.pyindex.names import normalize

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return set()
    reqs = (doc.get("python") or {}).get("requirements") if isinstance(doc, dict) else None
    out = set()
    for r in reqs if isinstance(reqs, list) else []:
        try:
            out.add(normalize(Requirement(str(r)).name))
        except InvalidRequirement:
            continue
    return out


def append_requirements(text: str, projects: Sequence[str]) -> tuple[str, int]:
    """`text` with the projects added to python.requirements; and the 1-based line they
    are on (pure). Raises UsageError when the layout cannot be extended as text."""
    root, nl = _parse(text)
    section = _value_of(root, "python")
    if not isinstance(section, yaml.MappingNode) or section.flow_style:
        raise UsageError("the manifest has no block-style python: section to add to")
    reqs = _value_of(section, "requirements")
    if reqs is None:  # no requirements yet: a new key, first in the section
        first_key = section.value[0][0]
        indent = first_key.start_mark.column
        at = text.rfind("\n", 0, first_key.start_mark.index) + 1
        line = f"{' ' * indent}requirements: [{', '.join(projects)}]{nl}"
        return text[:at] + line + text[at:], text.count("\n", 0, at) + 1
    if not isinstance(reqs, yaml.SequenceNode):
        raise UsageError("python.requirements is not a list")
    if reqs.flow_style:  # [a, b] -> [a, b, c]
        close = reqs.end_mark.index - 1
        if text[close] != "]":
            raise UsageError("cannot find the end of python.requirements' [...] list")
        sep = ", " if reqs.value else ""
        new = text[:close].rstrip(" ") + sep + ", ".join(projects) + text[close:]
        return new, reqs.start_mark.line + 1
    items = [_NewRequirement(p) for p in projects]
    return _after_last_item(text, reqs, items, nl, whose="python.requirements'")


@dataclass(frozen=True)
class _NewRequirement:
    project: str

    @property
    def url(self) -> str:  # what messages call it
        return self.project

    def lines(self, dash: int) -> list[str]:
        return [f"{' ' * dash}- {self.project}"]


def _value_of(node: yaml.Node | None, key: str) -> yaml.Node | None:
    pair = _child(node, key)
    return pair[1] if pair else None
