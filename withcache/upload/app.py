"""The upload service: a WSGI application for `POST /<index>/` (the upload API that
twine and `uv publish` speak), behind nginx.

nginx has already refused what it can (unknown users, readers who may not write,
bodies over the limit, odd paths); this application checks the credentials again
against the same file (it never trusts a header for who is uploading), streams the
file part into state/partial/, and hands it to indexes.accept. Each refusal is one
status with the reason as the reason phrase and the body: twine shows the first,
uv the second.
"""

from __future__ import annotations

import base64
import binascii
import sys
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from withcache import budget, placement
from withcache.errors import WithcacheError
from withcache.indexes import accept, model, users
from withcache.indexes.config import name_problem
from withcache.indexes.dist import BadUpload, Refused, filename_problem
from withcache.layout import Layout
from withcache.upload.form import Form, FormError

StartResponse = Callable[..., Any]


class HTTPRefusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def make_app(layout: Layout) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The WSGI callable for one data dir."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            status, message = 200, _handle(layout, environ)
        except HTTPRefusal as exc:
            status, message = exc.status, exc.message
        except Refused as exc:
            status, message = exc.status, str(exc)
        except WithcacheError as exc:
            print(f"withcache upload: error: {exc}", file=sys.stderr)
            status, message = 500, f"upload failed on the server: {exc}"
        body = (message + "\n").encode()
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ]
        if status == 401:
            headers.append(("WWW-Authenticate", 'Basic realm="withcache"'))
        start_response(f"{status} {reason(status, message)}", headers)
        return [body]

    return app


def reason(status: int, message: str) -> str:
    """The reason phrase: for 400 and 409 the message itself (twine prints only the
    status line), cut to one line of printable ASCII; the standard phrase otherwise."""
    if status not in (400, 409):
        return HTTPStatus(status).phrase
    text = "".join(c if 32 <= ord(c) < 127 else "?" for c in message.splitlines()[0])
    return text[:300] or HTTPStatus(status).phrase


def _handle(layout: Layout, environ: dict[str, Any]) -> str:
    if environ.get("REQUEST_METHOD") != "POST":
        raise HTTPRefusal(405, "uploads are POSTed to /<index>/")
    name = environ.get("PATH_INFO", "").strip("/")
    if name_problem(name):
        raise HTTPRefusal(400 if _tricky(name) else 404, f"no index {name!r}")
    try:
        ix = model.get(layout, name)
    except model.IndexNotFound:
        raise HTTPRefusal(404, f"no index {name!r}") from None
    user = _authorize(layout, ix, environ.get("HTTP_AUTHORIZATION", ""))
    length = _length(environ.get("CONTENT_LENGTH"))
    try:
        accept.make_room(layout, length or 0)
    except budget.NoRoom as exc:
        raise HTTPRefusal(507, str(exc)) from None
    try:
        form = Form(environ["wsgi.input"], environ.get("CONTENT_TYPE", ""), length)
        if not form.until_file():
            raise BadUpload("the form has no file part named 'content'")
        filename = form.filename or ""
        problem = filename_problem(filename)
        if problem:
            raise BadUpload(problem)
        part = accept.partial_path(layout)
        try:
            verified = placement.copy_in(layout, form, part, None)  # type: ignore[arg-type]
            fields = form.finish()
        except BaseException:
            part.unlink(missing_ok=True)
            raise
    except FormError as exc:
        raise BadUpload(str(exc)) from None
    addr = environ.get("HTTP_X_REAL_IP") or environ.get("REMOTE_ADDR") or None
    done = accept.accept(layout, ix, verified, filename, user=user, addr=addr, form=fields)
    again = "" if done.new else " (identical file was already there)"
    return f"OK: {done.filename} is in {ix.name} at {done.href}{again}"


def _authorize(layout: Layout, ix: model.Index, header: str) -> str:
    """The uploading user, checked here too: 401 for no or wrong credentials, 403 for a
    user who may not write to this index."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token:
        raise HTTPRefusal(401, "credentials required")
    try:
        user, sep, password = base64.b64decode(token, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise HTTPRefusal(401, "malformed credentials") from None
    if not sep:
        raise HTTPRefusal(401, "malformed credentials")
    if users.check_write(layout, ix, user, password):
        return user
    if not ix.may_write(user) and ix.may_read(user) and _password_ok(layout, ix, user, password):
        raise HTTPRefusal(403, f"{user} may read {ix.name} but not upload to it")
    raise HTTPRefusal(401, "wrong user name or password")


def _password_ok(layout: Layout, ix: model.Index, user: str, password: str) -> bool:
    path = users.auth_file(layout, ix.name, "read") if not ix.open else users.users_file(layout)
    return users.verify(users.read_hashes(path).get(user), password)


def _tricky(name: str) -> bool:
    return any(c in name for c in "/\\%\0") or ".." in name


def _length(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        raise BadUpload("bad Content-Length") from None
