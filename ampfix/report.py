"""Output formats: text (with source excerpts), concise, json, sarif, github; statistics; diffs.

Findings and the summary go to stdout; errors and progress go to stderr.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Callable, Iterable, Optional, TextIO

from ampfix import __version__
from ampfix.diagnostics import Applicability, Diagnostic
from ampfix.docs import rule_doc, rule_doc_url
from ampfix.rewrite import resolve_diagnostics
from ampfix.rules import RULES
from ampfix.source import Locator, SourceError, read_source

FORMATS = ("text", "concise", "json", "sarif", "github", "gitlab", "junit")
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"


def level_of(code: str) -> str:
    """How serious a finding is, the same in every CI format: training bugs (AMP2xx-AMP4xx) and
    unparsable files are errors; deprecations (AMP1xx), suppression typos and speed or
    modernisation advice (AMP5xx) are warnings."""
    return "error" if code == "AMP001" or code.startswith(("AMP2", "AMP3", "AMP4")) else "warning"


def use_colour(stream) -> bool:
    """ruff's choice: colour on a terminal; ``NO_COLOR`` turns it off, ``FORCE_COLOR`` (or
    ``CLICOLOR_FORCE``) on wherever the output goes (https://no-color.org, https://force-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR") or os.environ.get("CLICOLOR_FORCE") not in (None, "", "0"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _plain(text: str, **_style) -> str:
    return text


def _painter(colour: bool) -> Callable[..., str]:
    if not colour:
        return _plain
    import click

    return click.style


def _header(diag: Diagnostic, unsafe_fixes: bool, paint: Callable[..., str] = _plain) -> str:
    mark = " " + paint("[*]", fg="cyan") if diag.fix_applies(unsafe_fixes) else ""
    cell = f"cell {diag.cell}:" if diag.cell is not None else ""
    colon = paint(":", fg="cyan")
    where = f"{paint(diag.filename, bold=True)}{colon}{cell}{diag.location.row}{colon}{diag.location.column}{colon}"
    return f"{where} {paint(diag.code, fg='red', bold=True)}{mark} {diag.message}"


class SourceCache:
    """Reads a file's current text once, for excerpts. Missing or undecodable: no excerpt."""

    def __init__(self, overrides: Optional[dict[str, str]] = None):
        self._texts: dict[str, Optional[Locator]] = {}
        self._overrides = overrides or {}

    def locator(self, path: str) -> Optional[Locator]:
        if path not in self._texts:
            text = self._overrides.get(path)
            if text is None:
                try:
                    text = read_source(path).text
                except SourceError:
                    text = None
            self._texts[path] = Locator(text) if text is not None else None
        return self._texts[path]


def write_text(
    out: TextIO, diagnostics: list[Diagnostic], unsafe_fixes: bool, sources: SourceCache, concise: bool,
    colour: bool = False, show_fixes: bool = False,
) -> None:
    """ruff's full (or concise) output; with ``show_fixes`` each fix's diff follows its finding."""
    paint = _painter(colour)
    for diag in diagnostics:
        out.write(_header(diag, unsafe_fixes, paint) + "\n")
        if concise:
            continue
        excerpt = _excerpt(diag, sources, paint)
        if excerpt:
            out.write(excerpt)
        for index, (note, (start, _)) in enumerate(zip(diag.evidence, diag.evidence_locations)):
            number = evidence_cell(diag, index)
            cell = f"cell {number}:" if number is not None else ""
            out.write(f"  = evidence: {cell}{start.row}:{start.column}: {note.message}\n")
        if diag.fix_refused is not None:
            out.write(f"  = note: {diag.fix_refused}\n")
        if diag.no_fix_reason is not None and diag.fix is None:
            out.write(f"  = note: no fix offered: {diag.no_fix_reason}\n")
        if diag.fix is not None and diag.fix.applicability is Applicability.DISPLAY_ONLY:
            # never applied: the diff is the point, so it is shown whether or not --show-fixes asks
            out.write(f"  = {paint('help', fg='cyan', bold=True)}: {diag.fix.message} (a suggestion: review it and apply it by hand)\n")
            out.write(fix_preview(diag, sources, paint))
        elif diag.fix is not None:
            note = "" if diag.fix.applicability is Applicability.SAFE else " (unsafe fix: may change runtime behavior)"
            out.write(f"  = {paint('help', fg='cyan', bold=True)}: {diag.fix.message}{note}\n")
            if show_fixes:
                out.write(fix_preview(diag, sources, paint))
        out.write("\n")


def fix_preview(diag: Diagnostic, sources: SourceCache, paint: Callable[..., str] = _plain) -> str:
    """The diff of a finding's fix applied alone, as ruff prints it under a finding (``ℹ Safe
    fix`` and the changed lines with both line numbers); empty where it cannot be shown."""
    locator = sources.locator(diag.filename) if diag.cell is None else None
    if diag.fix is None or locator is None:
        return ""
    from ampfix.fixer import apply_fixes

    before = locator.text
    after, applied = apply_fixes(before, [diag])
    if not applied:
        return ""
    old, new = before.splitlines(), after.splitlines()
    width = len(str(max(len(old), len(new), 1)))
    kind = {Applicability.SAFE: "Safe fix", Applicability.UNSAFE: "Unsafe fix",
            Applicability.DISPLAY_ONLY: "Suggested fix (never applied)"}[diag.fix.applicability]
    lines = ["", paint(f"ℹ {kind}", bold=True)]
    import difflib  # only a report that shows a diff needs it

    for group in difflib.SequenceMatcher(None, old, new, autojunk=False).get_grouped_opcodes(2):
        if len(lines) > 2:
            lines.append(paint(f"{'':>{width}} {'':>{width}} ...", fg="blue"))
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                lines += [f"{paint(f'{i + 1:>{width}} {j + 1:>{width}} |', fg='blue')} {old[i]}" for i, j in zip(range(i1, i2), range(j1, j2))]
                continue
            lines += [paint(f"{i + 1:>{width}} {'':>{width}} |-{old[i]}", fg="red") for i in range(i1, i2)]
            lines += [paint(f"{'':>{width}} {j + 1:>{width}} |+{new[j]}", fg="green") for j in range(j1, j2)]
    return "\n".join(lines) + "\n"


def evidence_cell(diag: Diagnostic, index: int) -> Optional[int]:
    """The notebook cell of a finding's ``index``-th piece of evidence (None for a Python file)."""
    return _nth_cell(diag.evidence_cells, index, diag)


def _nth_cell(cells: tuple, index: int, diag: Diagnostic) -> Optional[int]:
    return cells[index] if index < len(cells) else diag.cell


def _excerpt(diag: Diagnostic, sources: SourceCache, paint: Callable[..., str] = _plain) -> str:
    if diag.cell is not None:
        return ""  # a notebook: the file's lines are JSON, not the cell's code
    locator = sources.locator(diag.filename)
    if locator is None or diag.location.row > len(locator.line_starts):
        return ""
    row = diag.location.row
    line = locator.line_text(row).expandtabs(1).rstrip()
    if len(line) > 200:
        return ""
    width = len(str(row))
    start = diag.location.column - 1
    end = diag.end_location.column - 1 if diag.end_location.row == row else len(line)
    carets = paint("^" * max(1, end - start) + f" {diag.code}", fg="red", bold=True)
    pad = " " * width
    gutter, numbered = paint(f"{pad} |", fg="blue", bold=True), paint(f"{row} |", fg="blue", bold=True)
    return f"{gutter}\n{numbered} {line}\n{gutter} {' ' * start}{carets}\n"


def write_json(out: TextIO, diagnostics: list[Diagnostic]) -> None:
    json.dump([_json_record(d) for d in resolve_diagnostics(diagnostics)], out, indent=2)
    out.write("\n")


def _json_record(diag: Diagnostic) -> dict:
    fix = None
    if diag.fix is not None:
        fix = {
            "applicability": diag.fix.applicability.value,
            "message": diag.fix.message,
            "edits": [
                {
                    **({"cell": _nth_cell(diag.edit_cells, index, diag)} if diag.cell is not None else {}),
                    "content": edit.content,
                    "location": {"row": start.row, "column": start.column},
                    "end_location": {"row": end.row, "column": end.column},
                }
                for index, (edit, (start, end)) in enumerate(zip(diag.fix.edits, diag.edit_locations))
            ],
        }
    return {
        "cell": diag.cell,
        "code": diag.code,
        "name": diag.name,
        "message": diag.message,
        "filename": os.path.abspath(diag.filename) if diag.filename != "-" else "-",
        "location": {"row": diag.location.row, "column": diag.location.column},
        "end_location": {"row": diag.end_location.row, "column": diag.end_location.column},
        "fix": fix,
        "fix_refused": diag.fix_refused,
        "no_fix_reason": diag.no_fix_reason,
        "evidence": [
            {
                "cell": evidence_cell(diag, index),
                "message": note.message,
                "location": {"row": start.row, "column": start.column},
                "end_location": {"row": end.row, "column": end.column},
            }
            for index, (note, (start, end)) in enumerate(zip(diag.evidence, diag.evidence_locations))
        ],
        "noqa_row": diag.location.row,
        "url": rule_doc_url(diag.code),
    }


def write_github(out: TextIO, diagnostics: list[Diagnostic]) -> None:
    """GitHub workflow annotations. A notebook's finding is annotated on the file, with its cell
    and position in the message: its rows are the cell's, not lines of the .ipynb JSON."""
    for d in diagnostics:
        props = [f"title={_gh_prop(f'ampfix ({d.code})')}", f"file={_gh_prop(repository_path(d.filename, 'GITHUB_WORKSPACE'))}"]
        message = f"{d.code} {d.message}"
        if d.cell is None:
            props += [
                f"line={d.location.row}", f"col={d.location.column}",
                f"endLine={d.end_location.row}", f"endColumn={d.end_location.column}",
            ]
        else:
            message = f"cell {d.cell}:{d.location.row}:{d.location.column}: {message}"
        out.write(f"::{level_of(d.code)} {','.join(props)}::{_gh_data(message)}\n")


def write_gitlab(out: TextIO, diagnostics: list[Diagnostic]) -> None:
    """GitLab's Code Quality report: one issue per finding, with a fingerprint that stays the same
    while the finding does (code, path, message, and how many identical ones came before)."""
    import hashlib

    issues, seen = [], Counter()
    for d in diagnostics:
        path = repository_path(d.filename, "CI_PROJECT_DIR")
        key = (d.code, path, d.message)
        seen[key] += 1
        fingerprint = hashlib.sha256(repr((*key, seen[key])).encode()).hexdigest()[:32]
        issues.append({
            "description": f"{d.code} {d.message}",
            "check_name": d.code,
            "fingerprint": fingerprint,
            "severity": "major" if level_of(d.code) == "error" else "minor",
            "location": {"path": path, "lines": {"begin": d.location.row, "end": d.end_location.row}},
        })
    out.write(json.dumps(issues, indent=2) + "\n")


def write_junit(out: TextIO, diagnostics: list[Diagnostic]) -> None:
    """JUnit XML, as ruff writes it: a test suite per file, a failing test case per finding."""
    from xml.sax.saxutils import quoteattr

    by_file: dict[str, list[Diagnostic]] = {}
    for d in diagnostics:
        by_file.setdefault(_relative(d.filename), []).append(d)
    total = len(diagnostics)
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
    out.write(f'<testsuites name="ampfix" tests="{max(total, 1)}" failures="{total}" errors="0">\n')
    if not by_file:
        out.write('  <testsuite name="ampfix" tests="1" failures="0" errors="0">\n')
        out.write('    <testcase name="No problems found" classname="ampfix"/>\n  </testsuite>\n')
    for path, found in by_file.items():
        out.write(f'  <testsuite name={quoteattr(path)} tests="{len(found)}" failures="{len(found)}" errors="0">\n')
        for d in found:
            where = f"line {d.location.row}, col {d.location.column}"
            out.write(f'    <testcase name={quoteattr(f"org.ampfix.{d.code}")} classname={quoteattr(path)} '
                      f'line="{d.location.row}" column="{d.location.column}">\n')
            out.write(f'      <failure message={quoteattr(d.message)}>{_xml_text(where + ", " + d.message)}</failure>\n')
            out.write("    </testcase>\n")
        out.write("  </testsuite>\n")
    out.write("</testsuites>\n")


def _xml_text(text: str) -> str:
    from xml.sax.saxutils import escape

    return escape(text)


def _relative(filename: str) -> str:
    if filename in ("-", ""):
        return filename or "-"
    relative = os.path.relpath(filename)
    return (filename if relative.startswith("..") else relative).replace(os.sep, "/")


def repository_path(filename: str, workspace_variable: str) -> str:
    """A path as a CI service resolves it: relative to its checkout (``$GITHUB_WORKSPACE``,
    ``$CI_PROJECT_DIR``), else to the git repository holding the file, else to the working
    directory; so a run from a subfolder annotates the right file."""
    if filename in ("-", ""):
        return filename or "-"
    path = os.path.abspath(filename)
    root = os.environ.get(workspace_variable) or _repository_root(os.path.dirname(path))
    if root:
        relative = os.path.relpath(path, os.path.abspath(root))
        if not relative.startswith(".."):
            return relative.replace(os.sep, "/")
    return _relative(filename)


def _repository_root(directory: str) -> Optional[str]:
    while True:
        if os.path.exists(os.path.join(directory, ".git")):
            return directory
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def _gh_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_prop(text: str) -> str:
    return _gh_data(text).replace(":", "%3A").replace(",", "%2C")


def sarif_document(diagnostics: list[Diagnostic]) -> dict:
    diagnostics = resolve_diagnostics(diagnostics)  # the fixes' content (LibCST rewrites)
    rules = [
        {
            "id": rule.code,
            "name": rule.name,
            "shortDescription": {"text": rule.summary},
            "fullDescription": {"text": rule.summary},
            "help": {"text": rule_doc(rule.code) or rule.summary, "markdown": rule_doc(rule.code) or rule.summary},
            "defaultConfiguration": {"level": level_of(rule.code)},
            **({"helpUri": rule_doc_url(rule.code)} if rule_doc_url(rule.code) else {}),
            "properties": {"fixSafety": rule.fix_safety},
        }
        for rule in RULES.values()
    ]
    index = {code: i for i, code in enumerate(RULES)}
    results = []
    for d in diagnostics:
        uri = _uri(d.filename)
        result = {
            "ruleId": d.code,
            "ruleIndex": index[d.code],
            "level": level_of(d.code),
            "message": {"text": d.message if d.cell is None else f"cell {d.cell}: {d.message}"},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": uri},
                        "region": _region(d.location, d.end_location),
                    }
                }
            ],
        }
        if d.cell is not None:
            # SARIF has no notebook cells: the cell is named in the message and in a property;
            # the region's rows are the cell's
            result["properties"] = {"cell": d.cell}
        if d.evidence:
            related = [
                {
                    "id": i,
                    "message": {"text": note.message if (cell := evidence_cell(d, i)) is None else f"cell {cell}: {note.message}"},
                    "physicalLocation": {"artifactLocation": {"uri": uri}, "region": _region(start, end)},
                    **({"properties": {"cell": cell}} if cell is not None else {}),
                }
                for i, (note, (start, end)) in enumerate(zip(d.evidence, d.evidence_locations))
            ]
            result["relatedLocations"] = related
            steps = [{"location": {k: v for k, v in r.items() if k != "id"}} for r in related]
            steps.append({"location": {**result["locations"][0], "message": {"text": d.message}}})
            result["codeFlows"] = [{"threadFlows": [{"locations": steps}]}]
        if d.fix is not None:
            result["fixes"] = [
                {
                    "description": {"text": d.fix.message},
                    "artifactChanges": [
                        {
                            "artifactLocation": {"uri": uri},
                            "replacements": [
                                {
                                    "deletedRegion": _region(start, end),
                                    "insertedContent": {"text": edit.content},
                                    **({"properties": {"cell": _nth_cell(d.edit_cells, i, d)}} if d.cell is not None else {}),
                                }
                                for i, (edit, (start, end)) in enumerate(zip(d.fix.edits, d.edit_locations))
                            ],
                        }
                    ],
                }
            ]
        results.append(result)
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "ampfix",
                        "version": __version__,
                        "informationUri": "https://pypi.org/project/ampfix/",
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }


def _region(start, end) -> dict:
    return {"startLine": start.row, "startColumn": start.column, "endLine": end.row, "endColumn": end.column}


def _uri(path: str) -> str:
    if path == "-":
        return "stdin"
    return path.replace(os.sep, "/")


def write_sarif(out: TextIO, diagnostics: list[Diagnostic]) -> None:
    json.dump(sarif_document(diagnostics), out, indent=2)
    out.write("\n")


def write_statistics(out: TextIO, diagnostics: list[Diagnostic], unsafe_fixes: bool, fmt: str = "text") -> None:
    """A count per rule, most frequent first; with ``--output-format json`` a list of
    ``{code, name, count, fixable}`` as ruff writes it."""
    counts = Counter(d.code for d in diagnostics)
    fixable = {d.code for d in diagnostics if d.fix_applies(unsafe_fixes)}
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    if fmt == "json":
        rows = [{"code": c, "name": RULES[c].name, "count": n, "fixable": c in fixable} for c, n in ordered]
        out.write(json.dumps(rows, indent=2) + "\n")
        return
    width = max((len(str(n)) for n in counts.values()), default=1)
    for code, count in ordered:
        mark = "[*]" if code in fixable else "[ ]"
        out.write(f"{count:>{width}}\t{code}\t{mark} {RULES[code].name}\n")


def summary(
    remaining: list[Diagnostic], fixed: int, unsafe_fixes: bool, mode: str, errors: int = 0
) -> Optional[str]:
    """The last line, ruff's: never "All checks passed!" while a finding remains, a fix was
    refused or a file could not be checked (``errors``)."""

    def plural(n: int) -> str:
        return f"{n} problem{'s' if n != 1 else ''}"

    line = _summary(remaining, fixed, unsafe_fixes, mode, plural)
    if errors:
        failed = f"{errors} file{'s' if errors != 1 else ''} with an error (see above)"
        line = f"{failed[0].upper()}{failed[1:]}." if line == "All checks passed!" else f"{line} {failed[0].upper()}{failed[1:]}."
    return line


def _summary(remaining, fixed: int, unsafe_fixes: bool, mode: str, plural) -> Optional[str]:
    safe = sum(1 for d in remaining if d.fix is not None and d.fix.applicability is Applicability.SAFE)
    unsafe = sum(1 for d in remaining if d.fix is not None and d.fix.applicability is Applicability.UNSAFE)
    if mode == "diff":
        if not fixed:
            return "No fixes available." + (f" ({unsafe} hidden fixes can be enabled with --unsafe-fixes)" if unsafe else "")
        extra = f" ({unsafe} additional fixes available with --unsafe-fixes)" if unsafe and not unsafe_fixes else ""
        return f"Would fix {plural(fixed)}{extra}."
    refused = sum(1 for d in remaining if d.fix_refused)
    if mode == "fix":
        total = fixed + len(remaining)
        if total == 0:
            return "All checks passed!"
        extra = f" ({unsafe} more fixable with --unsafe-fixes)" if unsafe and not unsafe_fixes else ""
        refusals = f", {refused} fix{'es' if refused != 1 else ''} refused" if refused else ""
        return f"Found {plural(total)} ({fixed} fixed, {len(remaining)} remaining{refusals}){extra}."
    if not remaining:
        return "All checks passed!"
    parts = []
    if unsafe_fixes:
        if safe + unsafe:
            parts.append(f"{safe + unsafe} fixable with --apply --unsafe-fixes" if unsafe else f"{safe} fixable with --apply")
    else:
        if safe:
            parts.append(f"{safe} fixable with --apply")
        if unsafe:
            parts.append(f"{unsafe} with --unsafe-fixes")
    if refused:
        parts.append(f"{refused} fix{'es' if refused != 1 else ''} refused")
    return f"Found {plural(len(remaining))}" + (f" ({', '.join(parts)})" if parts else "") + "."


def unified_diff(path: str, before: str, after: str) -> str:
    import difflib

    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), fromfile=f"a/{path}", tofile=f"b/{path}"
    )
    text = "".join(line if line.endswith(("\n", "\r")) else line + "\n\\ No newline at end of file\n" for line in lines)
    return text


def write_fixes(out: TextIO, fixed_by_file: Iterable[tuple[str, list[Diagnostic]]]) -> None:
    rows = [(path, Counter(d.code for d in fixed)) for path, fixed in fixed_by_file if fixed]
    if not rows:
        return
    out.write("\nFixed:\n")
    for path, counts in rows:
        out.write(f"{path}:\n")
        for code, count in sorted(counts.items()):
            out.write(f"    {count} × {code} ({RULES[code].name})\n")


WRITERS: dict[str, Callable] = {
    "json": write_json, "sarif": write_sarif, "github": write_github, "gitlab": write_gitlab, "junit": write_junit,
}
