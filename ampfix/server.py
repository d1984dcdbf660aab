"""`ampfix server`: a Language Server (pygls) for editors.

- diagnostics on open, change and save, from the editor's in-memory text, with each file's
  settings from its nearest configuration (as `ampfix check` reads them);
- code actions: each finding's fix (safe ones preferred, unsafe ones labelled), and "fix all"
  (the safe fixes to a fixed point, imports tidied) as a quick fix and as `source.fixAll.ampfix`;
- hover on a finding: the rule's document.

It only reads code, like `ampfix check`: nothing is imported or executed. Notebook documents are
not served yet (`ampfix check` handles .ipynb files).
"""

from __future__ import annotations

import os
from typing import Optional
from urllib.parse import unquote, urlparse

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer

from ampfix import __version__
from ampfix.diagnostics import Applicability, Diagnostic
from ampfix.docs import rule_doc
from ampfix.engine import check_source, fix_source
from ampfix.report import level_of
from ampfix.settings import (
    CliOverrides,
    ConfigError,
    Settings,
    build_settings,
    find_config,
)

FIX_ALL = "source.fixAll.ampfix"

server = LanguageServer("ampfix", __version__, text_document_sync_kind=lsp.TextDocumentSyncKind.Full)
_settings_by_folder: dict[str, Settings] = {}


def serve() -> None:
    server.start_io()


def _path(uri: str) -> str:
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else uri


def _settings(path: str) -> Settings:
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in _settings_by_folder:
        try:
            _settings_by_folder[folder] = build_settings(find_config(folder), CliOverrides())
        except ConfigError as exc:
            server.window_show_message(lsp.ShowMessageParams(type=lsp.MessageType.Error, message=f"ampfix: {exc}"))
            _settings_by_folder[folder] = Settings()
    return _settings_by_folder[folder]


def _findings(uri: str) -> tuple[object, list[Diagnostic]]:
    document = server.workspace.get_text_document(uri)
    path = _path(uri)
    if not path.endswith((".py", ".pyi")):
        return document, []
    return document, check_source(document.source, path, _settings(path))


def _range(document, start: int, end: int) -> lsp.Range:
    return lsp.Range(start=document.client_position_at_offset(start), end=document.client_position_at_offset(end))


def _to_lsp(document, diag: Diagnostic) -> lsp.Diagnostic:
    severity = lsp.DiagnosticSeverity.Error if level_of(diag.code) == "error" else lsp.DiagnosticSeverity.Warning
    return lsp.Diagnostic(
        range=_range(document, diag.start, diag.end),
        message=diag.message,
        severity=severity,
        code=diag.code,
        source="ampfix",
        related_information=[
            lsp.DiagnosticRelatedInformation(
                location=lsp.Location(uri=document.uri, range=_range(document, note.start, note.end)),
                message=note.message,
            )
            for note in diag.evidence
        ] or None,
    )


def _publish(uri: str) -> None:
    document, found = _findings(uri)
    server.text_document_publish_diagnostics(
        lsp.PublishDiagnosticsParams(uri=uri, version=document.version, diagnostics=[_to_lsp(document, d) for d in found])
    )


@server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
def did_open(params: lsp.DidOpenTextDocumentParams) -> None:
    _publish(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
def did_change(params: lsp.DidChangeTextDocumentParams) -> None:
    _publish(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
def did_save(params: lsp.DidSaveTextDocumentParams) -> None:
    _publish(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
def did_close(params: lsp.DidCloseTextDocumentParams) -> None:
    server.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[]))


def _overlaps(a: lsp.Range, b: lsp.Range) -> bool:
    def key(p: lsp.Position):
        return (p.line, p.character)

    return key(a.start) <= key(b.end) and key(b.start) <= key(a.end)


@server.feature(
    lsp.TEXT_DOCUMENT_CODE_ACTION,
    lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix, FIX_ALL]),
)
def code_actions(params: lsp.CodeActionParams) -> list[lsp.CodeAction]:
    uri = params.text_document.uri
    document, found = _findings(uri)
    wanted = params.context.only
    actions: list[lsp.CodeAction] = []
    if not wanted or lsp.CodeActionKind.QuickFix in wanted:
        for diag in found:
            if diag.fix is None or not _overlaps(_range(document, diag.start, diag.end), params.range):
                continue
            safe = diag.fix.applicability is Applicability.SAFE
            edits = [lsp.TextEdit(range=_range(document, e.start, e.end), new_text=e.content) for e in diag.fix.edits]
            actions.append(lsp.CodeAction(
                title=f"ampfix ({diag.code}): {diag.fix.message}" + ("" if safe else " (unsafe: may change training)"),
                kind=lsp.CodeActionKind.QuickFix,
                diagnostics=[_to_lsp(document, diag)],
                is_preferred=safe,
                edit=lsp.WorkspaceEdit(changes={uri: edits}),
            ))
    fix_all = _fix_all(uri, document)
    if fix_all is not None and (not wanted or any(k in wanted for k in (lsp.CodeActionKind.QuickFix, FIX_ALL, "source.fixAll", "source"))):
        actions.append(fix_all)
    return actions


def _fix_all(uri: str, document) -> Optional[lsp.CodeAction]:
    path = _path(uri)
    if not path.endswith((".py", ".pyi")):
        return None
    try:
        result = fix_source(document.source, path, _settings(path), unsafe_fixes=False)
    except Exception:  # a fix that would break the code is never offered
        return None
    if not result.changed:
        return None
    whole = _range(document, 0, len(document.source))
    return lsp.CodeAction(
        title="ampfix: fix all safe problems",
        kind=FIX_ALL,
        edit=lsp.WorkspaceEdit(changes={uri: [lsp.TextEdit(range=whole, new_text=result.source)]}),
    )


@server.feature(lsp.TEXT_DOCUMENT_HOVER)
def hover(params: lsp.HoverParams) -> Optional[lsp.Hover]:
    document, found = _findings(params.text_document.uri)
    point = lsp.Range(start=params.position, end=params.position)
    for diag in found:
        where = _range(document, diag.start, diag.end)
        if _overlaps(where, point):
            text = rule_doc(diag.code) or diag.message
            return lsp.Hover(contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=text), range=where)
    return None
