"""multipart/form-data as the upload API sends it, read as a stream.

The small fields (name, version, digests, the description...) are kept in memory,
within limits; the one file part is handed out as a file-like stream, so the bytes go
from the socket to the partial file (placement.copy_in) without a second copy on disk.
python-multipart does the parsing; this module only routes what it finds.
"""

from __future__ import annotations

from collections import deque
from typing import BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header

CHUNK = 4 << 20  # per read of the body: fewer, larger copies
MAX_FIELDS_BYTES = 16 << 20  # every field but the file together (descriptions can be long)
FILE_FIELD = "content"


class FormError(ValueError):
    """The body is not the multipart form the upload API sends."""


def boundary(content_type: str) -> bytes:
    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise FormError("expected a multipart/form-data body with a boundary")
    return params[b"boundary"]


class Form:
    """One request body: fields, and the file part (`content`) as a stream."""

    def __init__(self, body: BinaryIO, content_type: str, length: int | None) -> None:
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self._body = body
        self._left = length
        self._done = False
        self._ended = False
        self._pending: deque[memoryview] = deque()
        self._field_bytes = 0
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._value = bytearray()
        self._in_file = False
        self._file_started = False
        self._file_ended = False
        self._parser = MultipartParser(
            boundary(content_type),
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    # --- python-multipart's callbacks ----------------------------------------------------

    def _part_begin(self) -> None:
        self._headers = {}
        self._name = None
        self._value = bytearray()
        self._in_file = False

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _disp, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        self._name = name
        if b"filename" in params and name == FILE_FIELD:
            if self._file_started:
                raise FormError("more than one file part")
            self._file_started = True
            self._in_file = True
            self.filename = params[b"filename"].decode("utf-8", "replace")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:  # a view, not a copy: the chunk is ours and never changes
            self._pending.append(memoryview(data)[start:end])
            return
        self._field_bytes += end - start
        if self._field_bytes > MAX_FIELDS_BYTES:
            raise FormError("the form fields are too large")
        self._value += data[start:end]

    def _part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            self._file_ended = True
        elif self._name is not None:
            self.fields.setdefault(self._name, self._value.decode("utf-8", "replace"))

    def _end(self) -> None:
        self._ended = True

    # --- reading ---------------------------------------------------------------------------

    def _pump(self) -> bool:
        """Feed the parser one chunk of the body; False at its end."""
        if self._done:
            return False
        n = CHUNK if self._left is None else min(CHUNK, self._left)
        chunk = self._body.read(n) if n > 0 else b""
        if not chunk:
            self._done = True
            self._parser.finalize()
            if not self._ended:
                raise FormError("the body ended before the form did (truncated upload)")
            return False
        if self._left is not None:
            self._left -= len(chunk)
        self._parser.write(chunk)
        return True

    def until_file(self) -> bool:
        """Read up to the start of the file part; False when the form has none."""
        while not self._file_started and self._pump():
            pass
        return self._file_started

    def read(self, size: int = -1) -> bytes | memoryview:
        """The file part's bytes, as a file would give them (b"" at its end)."""
        while not self._pending and not self._file_ended and self._pump():
            pass
        if not self._pending:
            if not self._file_ended:
                raise FormError("the body ended inside the file part (truncated upload)")
            return b""
        return self._pending.popleft()

    def finish(self) -> dict[str, str]:
        """Read the rest of the body (fields after the file); return every field."""
        while self._pump():
            pass
        return self.fields
