"""Read an upstream index's project pages: PEP 691 JSON preferred, PEP 503 HTML fallback.

Parsing is pure (bytes in, Listed out). Only `get_page` touches the network: one GET
per project (conditional when validators are known), retried on connection errors
and 5xx; `fetch_projects` runs a few in parallel.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

import requests

from withcache.errors import WithcacheError
from withcache.pyindex.model import Listed, Yanked
from withcache.transport import USER_AGENT

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPES = ("application/vnd.pypi.simple.v1+html", "text/html")
ACCEPT = f"{JSON_TYPE}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
ATTEMPTS = 3
TIMEOUT = (15.0, 60.0)  # connect, read


class UpstreamError(WithcacheError):
    """The upstream index could not tell us about a project."""


def parse(body: bytes, content_type: str, base_url: str) -> list[Listed]:
    """The files of a project page, whichever format the upstream answered in."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == JSON_TYPE:
        return parse_json(body, base_url)
    if media in HTML_TYPES:
        return parse_html(body.decode("utf-8", errors="replace"), base_url)
    raise ValueError(f"not a simple-index page: Content-Type {content_type or 'missing'!r}")


def parse_json(body: bytes, base_url: str) -> list[Listed]:
    try:
        doc = json.loads(body)
    except ValueError as exc:  # UnicodeDecodeError too
        raise ValueError(f"not valid PEP 691 JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), list):
        raise ValueError("PEP 691 page without a 'files' list")
    out = []
    for f in doc["files"]:
        if not isinstance(f, dict) or "filename" not in f or "url" not in f:
            continue
        hashes = f.get("hashes") or {}
        meta = f.get("core-metadata", f.get("dist-info-metadata", False))
        size = f.get("size")
        out.append(
            Listed(
                filename=str(f["filename"]),
                url=urldefrag(urljoin(base_url, str(f["url"]))).url,
                sha256=_sha256(hashes.get("sha256") if isinstance(hashes, dict) else None),
                requires_python=f.get("requires-python") or None,
                yanked=_yanked_json(f.get("yanked", False)),
                metadata=_metadata_json(meta),
                size=size if isinstance(size, int) else None,
                upload_time=f.get("upload-time") if isinstance(f.get("upload-time"), str) else None,
            )
        )
    return out


def parse_html(text: str, base_url: str) -> list[Listed]:
    parser = _Anchors(base_url)
    parser.feed(text)
    parser.close()
    return parser.files


class _Anchors(HTMLParser):
    """Collects <a href> with PEP 503/592/658/714 data attributes (already unescaped)."""

    def __init__(self, base_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base = base_url
        self.files: list[Listed] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "base" and a.get("href"):
            self.base = urljoin(self.base, a["href"] or "")
            return
        href = a.get("href")
        if tag != "a" or not href:
            return
        url, fragment = urldefrag(urljoin(self.base, href))
        filename = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
        if not filename:
            return
        algo, _, digest = fragment.partition("=")
        meta = a.get("data-core-metadata", a.get("data-dist-info-metadata"))
        self.files.append(
            Listed(
                filename=filename,
                url=url,
                sha256=_sha256(digest) if algo == "sha256" else None,
                requires_python=a.get("data-requires-python") or None,
                yanked=False if "data-yanked" not in a else (a["data-yanked"] or True),
                metadata=_metadata_html(meta),
            )
        )


def _sha256(value: object) -> str | None:
    if isinstance(value, str) and len(value) == 64:
        try:
            int(value, 16)
        except ValueError:
            return None
        return value.lower()
    return None


def _yanked_json(value: object) -> Yanked:
    if isinstance(value, str):
        return value or True
    return bool(value)


def _metadata_json(value: object) -> bool | str:
    if isinstance(value, dict):
        return _sha256(value.get("sha256")) or bool(value)
    return bool(value)


def _metadata_html(value: str | None) -> bool | str:
    if value is None:
        return False
    algo, _, digest = value.partition("=")
    if algo == "sha256":
        return _sha256(digest) or True
    return value.strip().lower() != "false"


def project_url(index: str, project: str) -> str:
    return f"{index}{project}/"


@dataclass(frozen=True)
class Page:
    """An upstream's answer for one project page: 200 (body), 304 (unchanged) or 404."""

    url: str
    status: int
    body: bytes = b""
    content_type: str = ""
    etag: str | None = None
    last_modified: str | None = None

    def files(self) -> list[Listed]:
        """The page parsed; UpstreamError when it is not a simple-index page."""
        try:
            return parse(self.body, self.content_type, self.url)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise UpstreamError(f"{self.url}: {exc}") from None


def get_page(
    session: requests.Session,
    index: str,
    project: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    timeout: tuple[float, float] = TIMEOUT,
    attempts: int = ATTEMPTS,
) -> Page:
    """One project page, conditionally when validators are given (If-None-Match,
    If-Modified-Since): a 304 is returned as such, unread. Connection errors and 5xx
    are retried; what is still wrong after that raises UpstreamError."""
    url = project_url(index, project)
    headers = {"Accept": ACCEPT}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    for attempt in range(1, attempts + 1):
        try:
            r = session.get(url, headers=headers, timeout=timeout)
        except requests.Timeout as exc:
            if attempt == attempts:
                raise UpstreamError(f"{url}: timed out ({type(exc).__name__})") from None
        except requests.RequestException as exc:
            if attempt == attempts:
                raise UpstreamError(f"{url}: cannot connect: {exc}") from None
        else:
            if r.status_code < 500 or attempt == attempts:
                break
        time.sleep(0.5 * attempt)
    if r.status_code in (304, 404):
        return Page(url, r.status_code, etag=r.headers.get("ETag") or etag)
    if r.status_code != 200:
        raise UpstreamError(f"{url}: HTTP {r.status_code} {r.reason or ''}".rstrip())
    return Page(
        r.url,
        200,
        r.content,
        r.headers.get("Content-Type", ""),
        r.headers.get("ETag"),
        r.headers.get("Last-Modified"),
    )


def fetch_project(session: requests.Session, index: str, project: str) -> list[Listed]:
    """One project's files; [] when the upstream has no such project (404)."""
    page = get_page(session, index, project)
    return page.files() if page.status == 200 else []


def new_session(jobs: int = 8) -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=jobs)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def fetch_projects(index: str, projects: Iterable[str], jobs: int = 8) -> dict[str, list[Listed]]:
    """Several projects' pages in parallel (the pool is joined before returning)."""
    names = sorted(set(projects))
    if not names:
        return {}
    pool = ThreadPoolExecutor(max(1, min(jobs, len(names))), "pyindex-pages")
    with new_session(jobs) as session, pool:
        pages = list(pool.map(lambda p: fetch_project(session, index, p), names))
    return dict(zip(names, pages, strict=True))
