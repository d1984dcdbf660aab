"""`--add-noqa`: baseline a legacy codebase by suppressing what is reported today.

Each reported line gets ``# noqa: CODE, ...`` at its end, merged into a ``# noqa: X`` comment the
line already has; running it again adds nothing (the findings are suppressed now). A line where a
comment cannot go (its end is inside a multi-line string, or it continues with a backslash) is
left alone and counted as skipped.
"""

from __future__ import annotations

import io
import re
import tokenize

from ampfix.diagnostics import Diagnostic
from ampfix.source import Locator

_NOQA_CODES = re.compile(r"#\s*noqa:\s*(?P<codes>[A-Z]+[0-9]+(?:[\s,]+[A-Z]+[0-9]+)*)", re.I)
_BARE_NOQA = re.compile(r"#\s*noqa(?!\s*:)", re.I)


def add_noqa(text: str, diagnostics: list[Diagnostic]) -> tuple[str, int, int]:
    """(new text, directives added, lines skipped) for the diagnostics of ``text``."""
    codes_by_row: dict[int, set[str]] = {}
    for diag in diagnostics:
        if diag.code != "AMP001":
            codes_by_row.setdefault(diag.location.row, set()).add(diag.code)
    if not codes_by_row:
        return text, 0, 0
    starts = Locator(text).line_starts  # lines as Python's tokenizer ends them (not at \f or \u2028)
    lines = [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)])]
    unsafe_rows, comments = _rows_without_room(text)
    # a line continued with a backslash cannot end in a comment
    unsafe_rows |= {row for row, line in enumerate(lines, start=1) if line.rstrip().endswith("\\") and row not in comments}
    added = skipped = 0
    for row, codes in sorted(codes_by_row.items()):
        if row > len(lines) or row in unsafe_rows:
            skipped += 1
            continue
        line = lines[row - 1]
        body = line.rstrip("\r\n")
        ending = line[len(body):]
        comment_col = comments.get(row)
        comment = body[comment_col:] if comment_col is not None else ""
        if comment and _BARE_NOQA.search(comment):
            continue  # a bare `# noqa` suppresses every code already
        existing = _NOQA_CODES.search(comment) if comment else None
        if existing:
            have = [c.upper() for c in re.findall(r"[A-Za-z]+[0-9]+", existing.group("codes"))]
            new = [c for c in sorted(codes) if c not in have]
            if not new:
                continue
            start = comment_col + existing.start("codes")
            end = comment_col + existing.end("codes")
            body = body[:start] + ", ".join([*have, *new]) + body[end:]
        else:
            body = body.rstrip() + "  # noqa: " + ", ".join(sorted(codes))
        lines[row - 1] = body + ending
        added += 1
    return "".join(lines), added, skipped


def _rows_without_room(text: str) -> tuple[set[int], dict[int, int]]:
    """Rows whose end lies inside a multi-line string (no comment can go there), and the column
    where each row's comment starts."""
    blocked: set[int] = set()
    comments: dict[int, int] = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.STRING and token.end[0] > token.start[0]:
                blocked.update(range(token.start[0], token.end[0]))
            elif token.type == tokenize.COMMENT:
                comments[token.start[0]] = token.start[1]
            elif getattr(tokenize, "FSTRING_MIDDLE", None) == token.type and token.end[0] > token.start[0]:
                blocked.update(range(token.start[0], token.end[0]))
    except (tokenize.TokenError, SyntaxError):
        return set(range(1, text.count("\n") + 2)), {}  # cannot tell: touch nothing
    return blocked, comments
