"""Reading, decoding and writing source files without losing a byte of their form.

A file is decoded with the encoding Python itself would use (BOM or coding cookie, else UTF-8),
kept with its own line endings, and written back atomically in the same encoding, with the same
BOM and permission bits.
"""

from __future__ import annotations

import codecs
import io
import os
import re
import stat
import tokenize
from bisect import bisect_right
from dataclasses import dataclass
from typing import Optional

from ampfix.diagnostics import Position


class SourceError(Exception):
    """A file that cannot be read or decoded. The message names the cause, not the file."""


@dataclass
class SourceText:
    text: str
    encoding: str
    bom: bool

    @classmethod
    def decode(cls, data: bytes) -> "SourceText":
        if b"\0" in data:
            raise SourceError("file contains NUL bytes (binary file?)")
        try:
            encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        except SyntaxError as exc:  # unknown codec in a coding cookie, or BOM/cookie conflict
            raise SourceError(f"invalid encoding declaration: {exc.msg}") from None
        bom = data.startswith(codecs.BOM_UTF8)
        body = data[len(codecs.BOM_UTF8):] if bom else data
        codec = "utf-8" if encoding == "utf-8-sig" else encoding
        try:
            text = body.decode(codec)
        except UnicodeDecodeError as exc:
            raise SourceError(
                f"cannot decode as {codec} (byte 0x{exc.object[exc.start]:02x} at offset "
                f"{exc.start}); declare the encoding with a coding cookie"
            ) from None
        return cls(text=text, encoding=codec, bom=bom)

    def encode(self, text: str) -> bytes:
        data = text.encode(self.encoding)
        return codecs.BOM_UTF8 + data if self.bom else data


def read_source(path: str) -> SourceText:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise SourceError(exc.strerror or str(exc)) from None
    return SourceText.decode(data)


def write_atomic(path: str, data: bytes) -> None:
    """Replace path with data so that readers see the old or the new file, never a mix.

    Keeps the permission bits, and the owner and group where the process may set them (root in a
    container writing a bind-mounted tree); writes in place instead when the file has several hard
    links, so that every link sees the fix. Refuses read-only files (no write bit, even for root)
    and unwritable folders with a SourceError: nothing is written.
    """
    target = os.path.realpath(path)  # write through symlinks, keeping the link itself
    try:
        st = os.stat(target)
    except OSError as exc:
        raise SourceError(f"cannot write file: {exc.strerror or exc}; nothing written") from None
    if not os.access(target, os.W_OK) or not st.st_mode & 0o222:
        raise SourceError("file is read-only; nothing written")
    if st.st_nlink > 1:
        _write_in_place(target, data)
        return
    directory = os.path.dirname(target)
    # The temporary file's name is bound before the file exists, and one handler covers its whole
    # life: an interrupt (Ctrl-C) at any point, even right after it was created, removes it.
    tmp: Optional[str] = None
    try:
        for _ in range(100):
            tmp = os.path.join(directory, f".ampfix-{os.urandom(6).hex()}.tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
                break
            except FileExistsError:
                tmp = None  # another file has that name: never touch it, draw another
            except OSError as exc:
                tmp = None
                raise SourceError(f"cannot write in {directory}: {exc.strerror or exc}; nothing written") from None
        else:
            raise SourceError(f"cannot write in {directory}: no free temporary name; nothing written")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, stat.S_IMODE(st.st_mode))
        _keep_owner(tmp, st)
        os.replace(tmp, target)
    except BaseException:
        if tmp is not None:
            _remove_quietly(tmp)
        raise


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _keep_owner(tmp: str, original: os.stat_result) -> None:
    """The new file gets the old one's owner and group when the process may give them."""
    if not hasattr(os, "chown"):
        return
    current = os.stat(tmp)
    if (current.st_uid, current.st_gid) == (original.st_uid, original.st_gid):
        return
    try:
        os.chown(tmp, original.st_uid, original.st_gid)
    except OSError:
        try:
            os.chown(tmp, -1, original.st_gid)  # a member of the group may still keep the group
        except OSError:
            pass


def _write_in_place(target: str, data: bytes) -> None:
    """Several hard links share the file: rewrite its content (not atomic, but every link sees it)."""
    try:
        with open(target, "r+b") as handle:
            handle.write(data)
            handle.truncate()
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise SourceError(f"cannot write file: {exc.strerror or exc}; it may be incomplete") from None


# Python's tokenizer ends lines at \r\n, \r or \n only (not at \f, \v or unicode separators),
# so str.splitlines() would disagree with ast line numbers.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class Locator:
    """Converts between character offsets, ast positions and 1-based rows/columns."""

    def __init__(self, text: str):
        self.text = text
        starts = [0]
        starts.extend(m.end() for m in _LINE_BREAK.finditer(text))
        self.line_starts = starts
        self._utf8_cache: dict[int, list[int]] = {}

    def line_start(self, row: int) -> int:
        return self.line_starts[min(row, len(self.line_starts)) - 1]

    def line_end(self, row: int) -> int:
        """Offset of the line break that ends row (or the end of the text)."""
        if row < len(self.line_starts):
            end = self.line_starts[row]
            text = self.text
            if text.startswith("\r\n", end - 2):
                return end - 2
            return end - 1
        return len(self.text)

    def line_text(self, row: int) -> str:
        return self.text[self.line_start(row):self.line_end(row)]

    def offset(self, row: int, utf8_col: int) -> int:
        """Character offset of an ast position (1-based row, UTF-8 byte column)."""
        start = self.line_start(row)
        line = self.text[start:self.line_end(row)]
        if line.isascii():
            return start + utf8_col
        return start + len(line.encode("utf-8")[:utf8_col].decode("utf-8", "replace"))

    def node_range(self, node) -> tuple[int, int]:
        return (
            self.offset(node.lineno, node.col_offset),
            self.offset(node.end_lineno, node.end_col_offset),
        )

    def position(self, offset: int) -> Position:
        row = bisect_right(self.line_starts, offset)
        return Position(row, offset - self.line_starts[row - 1] + 1)

    def newline(self) -> str:
        """The file's dominant line ending, used for inserted lines."""
        match = _LINE_BREAK.search(self.text)
        return match.group(0) if match else "\n"

    def indentation(self, row: int) -> str:
        line = self.line_text(row)
        return line[: len(line) - len(line.lstrip(" \t"))]
