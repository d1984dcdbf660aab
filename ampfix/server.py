"""`ampfix server`: a Language Server (pygls) for editors.

- diagnostics on open, change and save, from the editor's in-memory text, with each file's
  settings from its nearest configuration (as `ampfix check` reads them) under the editor's own
  settings (`initializationOptions` / `workspace/didChangeConfiguration`, as ruff's server takes
  them: the editor's selection is the command line's layer);
- notebook documents: the code cells checked as one program, as `ampfix check` checks an
  ``.ipynb`` file, each finding published on its cell;
- code actions: each finding's fix (safe ones preferred, unsafe ones labelled), and "fix all"
  (the safe fixes to a fixed point, imports tidied) as a quick fix and as `source.fixAll.ampfix`;
- hover on a finding: the rule's document.

It only reads code, like `ampfix check`: nothing is imported or executed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import unquote, urlparse

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer

from ampfix import __version__
from ampfix.diagnostics import Applicability, Diagnostic
from ampfix.docs import rule_doc, rule_doc_url
from ampfix.engine import check_source, fix_source
from ampfix.notebook import Notebook
from ampfix.report import level_of
from ampfix.rewrite import RewriteError, resolve_fix
from ampfix.settings import (
    CONFIG_NAMES,
    CliOverrides,
    ConfigError,
    FileConfig,
    Settings,
    default_settings,
    build_settings,
    find_config,
    load_config,
)
from ampfix.source import Locator

FIX_ALL = "source.fixAll.ampfix"

server = LanguageServer(
    "ampfix",
    __version__,
    text_document_sync_kind=lsp.TextDocumentSyncKind.Full,
    notebook_document_sync=lsp.NotebookDocumentSyncOptions(
        notebook_selector=[lsp.NotebookDocumentFilterWithCells(cells=[lsp.NotebookCellLanguage(language="python")], notebook="*")],
        save=True,
    ),
)


def serve() -> None:
    server.start_io()


# -- settings ---------------------------------------------------------------------------------

# The editor's settings (camelCase, as ruff's server names them) and CliOverrides' fields.
_LIST_SETTINGS = {
    "select": "select", "extendSelect": "extend_select", "ignore": "ignore", "fixable": "fixable",
    "unfixable": "unfixable", "extendSafeFixes": "extend_safe_fixes", "extendUnsafeFixes": "extend_unsafe_fixes",
}
_TEXT_SETTINGS = {"targetTorch": "target_torch", "defaultDevice": "default_device", "ampDtype": "amp_dtype"}


@dataclass
class EditorSettings:
    overrides: CliOverrides = field(default_factory=CliOverrides)
    configuration: Optional[str] = None  # a configuration file to use instead of the nearest
    unsafe_fixes: bool = False  # "fix all" applies unsafe fixes too


def editor_settings(options: Any) -> tuple[EditorSettings, list[str]]:
    """The editor's settings from ``{"ampfix": {...}}`` or ``{...}``, and a message for each
    key that is unknown or of the wrong type (that key is left out)."""
    if isinstance(options, dict) and isinstance(options.get("ampfix"), dict):
        options = options["ampfix"]
    if isinstance(options, dict) and isinstance(options.get("settings"), dict):
        options = options["settings"]  # ruff's initializationOptions shape
    found, problems = EditorSettings(), []
    for key, value in (options or {}).items() if isinstance(options, dict) else ():
        if key in _LIST_SETTINGS:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                problems.append(f"`{key}` must be a list of rule codes")
                continue
            setattr(found.overrides, _LIST_SETTINGS[key], list(value))
        elif key in _TEXT_SETTINGS or key == "configuration":
            if not isinstance(value, str):
                problems.append(f"`{key}` must be a string")
                continue
            if key == "configuration":
                found.configuration = os.path.expanduser(value)
            else:
                setattr(found.overrides, _TEXT_SETTINGS[key], value)
        elif key in ("unsafeFixes", "preview"):
            if not isinstance(value, bool):
                problems.append(f"`{key}` must be true or false")
                continue
            if key == "preview":
                found.overrides.preview = value
            else:
                found.unsafe_fixes = value
        else:
            problems.append(f"unknown setting `{key}`")
    return found, problems


class _State:
    editor = EditorSettings()
    by_folder: dict[str, Settings] = {}


def _show_error(message: str) -> None:
    server.window_show_message(lsp.ShowMessageParams(type=lsp.MessageType.Error, message=f"ampfix: {message}"))


def _use_editor_settings(options: Any) -> None:
    _State.editor, problems = editor_settings(options)
    _State.by_folder = {}
    for problem in problems:
        _show_error(f"editor settings: {problem}")


def _settings(path: str) -> Settings:
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in _State.by_folder:
        editor = _State.editor
        try:
            config: FileConfig = load_config(editor.configuration) if editor.configuration else find_config(folder)
            _State.by_folder[folder] = build_settings(config, editor.overrides)
        except ConfigError as exc:
            _show_error(str(exc))
            _State.by_folder[folder] = default_settings()
    return _State.by_folder[folder]


@server.feature(lsp.INITIALIZE)
def initialize(params: lsp.InitializeParams) -> None:
    _use_editor_settings(params.initialization_options)


@server.feature(lsp.WORKSPACE_DID_CHANGE_CONFIGURATION)
def did_change_configuration(params: lsp.DidChangeConfigurationParams) -> None:
    _use_editor_settings(params.settings)
    _republish_all()


def _republish_all() -> None:
    for uri in list(server.workspace.text_documents):
        if server.workspace.get_notebook_document(cell_uri=uri) is None:
            _publish(uri)
    for uri in list(server.workspace.notebook_documents):
        _publish_notebook(uri)


# Configuration files whose change on disk reloads the settings, as ruff's server watches its own;
# `*.toml` covers the files an `extend` names.
_WATCHED = [f"**/{name}" for name in CONFIG_NAMES] + ["**/*.toml"]


@server.feature(lsp.INITIALIZED)
def initialized(params: lsp.InitializedParams) -> None:
    capabilities = server.client_capabilities.workspace
    watched = capabilities.did_change_watched_files if capabilities is not None else None
    if watched is not None and watched.dynamic_registration:
        server.client_register_capability(lsp.RegistrationParams(registrations=[lsp.Registration(
            id="ampfix-configuration-files",
            method=lsp.WORKSPACE_DID_CHANGE_WATCHED_FILES,
            register_options=lsp.DidChangeWatchedFilesRegistrationOptions(
                watchers=[lsp.FileSystemWatcher(glob_pattern=pattern) for pattern in _WATCHED]
            ),
        )]))


@server.feature(lsp.WORKSPACE_DID_CHANGE_WATCHED_FILES)
def did_change_watched_files(params: lsp.DidChangeWatchedFilesParams) -> None:
    """A configuration file was created, edited or deleted: settings are read again and every
    open document is checked with them."""
    if any(_path(change.uri).endswith(".toml") for change in params.changes):
        _State.by_folder = {}
        _republish_all()


# -- where the findings are -------------------------------------------------------------------


def _path(uri: str) -> str:
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else uri


class _TextView:
    """One Python file: the program is the document's text."""

    def __init__(self, uri: str):
        self.uri = uri
        self.path = _path(uri)
        self.document = server.workspace.get_text_document(uri)
        self.program = self.document.source
        self.cell_uris = [uri]

    def place(self, start: int, end: int) -> Optional[tuple[str, lsp.Range]]:
        """The document and range of a span of the program."""
        return self.uri, _range(self.document, start, end)

    def fixed_documents(self, program: str) -> dict[str, str]:
        return {self.uri: program} if program != self.program else {}


class _NotebookView:
    """A notebook document: its code cells as one program (ampfix/notebook.py), spans of the
    program placed on the cell that holds them."""

    def __init__(self, notebook: lsp.NotebookDocument):
        self.uri = notebook.uri
        self.path = _path(notebook.uri)
        self.cell_uris = [cell.document for cell in notebook.cells]
        self.documents = [server.workspace.get_text_document(uri) for uri in self.cell_uris]
        kinds = ["code" if cell.kind == lsp.NotebookCellKind.Code else "markdown" for cell in notebook.cells]
        self.cells = Notebook.from_cells([(kind, doc.source) for kind, doc in zip(kinds, self.documents)])
        self.program = self.cells.program
        self._locator = Locator(self.program)
        self._cell_locators = [Locator(doc.source) for doc in self.documents]

    def _in_cell(self, offset: int) -> Optional[tuple[int, int]]:
        """(cell index, offset in the cell's text) of a program offset; None on a boundary line."""
        where = self._locator.position(offset)
        number, first_row = self.cells.cell_of(where.row)
        if number is None:
            return None
        index, row = number - 1, where.row - first_row + 1
        locator = self._cell_locators[index]
        if row > len(locator.line_starts):
            return index, len(locator.text)  # the newline the program adds after the cell
        line = locator.line_text(row)
        return index, locator.line_start(row) + min(where.column - 1, len(line))

    def place(self, start: int, end: int) -> Optional[tuple[str, lsp.Range]]:
        a, b = self._in_cell(start), self._in_cell(end)
        if a is None or b is None or a[0] != b[0]:
            return None
        document = self.documents[a[0]]
        return document.uri, _range(document, a[1], b[1])

    def fixed_documents(self, program: str) -> dict[str, str]:
        return {
            self.cell_uris[index]: text
            for index, text in self.cells.cell_sources(program).items()
            if text != self.documents[index].source
        }


def _view(uri: str):
    notebook = server.workspace.get_notebook_document(cell_uri=uri)
    return _NotebookView(notebook) if notebook is not None else _TextView(uri)


def _checkable(view) -> bool:
    """A notebook, or a Python file (not, say, a notebook's JSON opened as text)."""
    return isinstance(view, _NotebookView) or view.path.endswith((".py", ".pyi"))


def _findings(view) -> list[Diagnostic]:
    if not _checkable(view):
        return []
    return check_source(view.program, view.path, _settings(view.path))


def _range(document, start: int, end: int) -> lsp.Range:
    return lsp.Range(start=document.client_position_at_offset(start), end=document.client_position_at_offset(end))


def _to_lsp(view, diag: Diagnostic, where: lsp.Range) -> lsp.Diagnostic:
    severity = lsp.DiagnosticSeverity.Error if level_of(diag.code) == "error" else lsp.DiagnosticSeverity.Warning
    related = []
    for note in diag.evidence:
        placed = view.place(note.start, note.end)
        if placed is not None:
            related.append(lsp.DiagnosticRelatedInformation(location=lsp.Location(uri=placed[0], range=placed[1]), message=note.message))
    url = rule_doc_url(diag.code)
    return lsp.Diagnostic(
        range=where, message=diag.message, severity=severity, code=diag.code, source="ampfix",
        related_information=related or None, code_description=lsp.CodeDescription(href=url) if url else None,
    )


def _placed(view, found: list[Diagnostic]):
    """(diagnostic, document uri, range) of each finding the view can place."""
    for diag in found:
        placed = view.place(diag.start, diag.end) or view.place(diag.start, diag.start)
        if placed is not None:
            yield diag, placed[0], placed[1]


def _publish_view(view) -> None:
    by_uri: dict[str, list[lsp.Diagnostic]] = {uri: [] for uri in view.cell_uris}
    for diag, uri, where in _placed(view, _findings(view)):
        by_uri.setdefault(uri, []).append(_to_lsp(view, diag, where))
    for uri, diagnostics in by_uri.items():
        version = server.workspace.get_text_document(uri).version
        server.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=uri, version=version, diagnostics=diagnostics))


def _publish(uri: str) -> None:
    _publish_view(_TextView(uri))


def _publish_notebook(notebook_uri: str) -> None:
    notebook = server.workspace.get_notebook_document(notebook_uri=notebook_uri)
    if notebook is not None:
        _publish_view(_NotebookView(notebook))


# -- documents --------------------------------------------------------------------------------


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
    _clear([params.text_document.uri])


def _clear(uris: list[str]) -> None:
    for uri in uris:
        server.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=uri, diagnostics=[]))


@server.feature(lsp.NOTEBOOK_DOCUMENT_DID_OPEN)
def notebook_did_open(params: lsp.DidOpenNotebookDocumentParams) -> None:
    _publish_notebook(params.notebook_document.uri)


@server.feature(lsp.NOTEBOOK_DOCUMENT_DID_CHANGE)
def notebook_did_change(params: lsp.DidChangeNotebookDocumentParams) -> None:
    removed = []
    structure = params.change.cells.structure if params.change.cells is not None else None
    if structure is not None and structure.did_close:
        removed = [cell.uri for cell in structure.did_close]
    _clear(removed)
    _publish_notebook(params.notebook_document.uri)


@server.feature(lsp.NOTEBOOK_DOCUMENT_DID_SAVE)
def notebook_did_save(params: lsp.DidSaveNotebookDocumentParams) -> None:
    _publish_notebook(params.notebook_document.uri)


@server.feature(lsp.NOTEBOOK_DOCUMENT_DID_CLOSE)
def notebook_did_close(params: lsp.DidCloseNotebookDocumentParams) -> None:
    _clear([cell.uri for cell in params.cell_text_documents])


# -- code actions and hover -------------------------------------------------------------------


def _overlaps(a: lsp.Range, b: lsp.Range) -> bool:
    def key(p: lsp.Position):
        return (p.line, p.character)

    return key(a.start) <= key(b.end) and key(b.start) <= key(a.end)


def _fix_edits(view, diag: Diagnostic) -> Optional[dict[str, list[lsp.TextEdit]]]:
    """The fix's edits per document; None when one of them cannot be placed (a cell boundary)."""
    changes: dict[str, list[lsp.TextEdit]] = {}
    try:
        fix = resolve_fix(diag.fix)
    except RewriteError:
        return None
    for edit in fix.edits:
        placed = view.place(edit.start, edit.end)
        if placed is None:
            return None
        changes.setdefault(placed[0], []).append(lsp.TextEdit(range=placed[1], new_text=edit.content))
    return changes


@server.feature(
    lsp.TEXT_DOCUMENT_CODE_ACTION,
    lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix, FIX_ALL]),
)
def code_actions(params: lsp.CodeActionParams) -> list[lsp.CodeAction]:
    uri = params.text_document.uri
    view = _view(uri)
    found = _findings(view)
    wanted = params.context.only
    actions: list[lsp.CodeAction] = []
    if not wanted or lsp.CodeActionKind.QuickFix in wanted:
        for diag, where_uri, where in _placed(view, found):
            if diag.fix is None or where_uri != uri or not _overlaps(where, params.range):
                continue
            if diag.fix.applicability is Applicability.DISPLAY_ONLY:
                continue  # a suggestion for a person: shown in the diagnostic's text, never applied
            changes = _fix_edits(view, diag)
            if changes is None:
                continue
            safe = diag.fix.applicability is Applicability.SAFE
            actions.append(lsp.CodeAction(
                title=f"ampfix ({diag.code}): {diag.fix.message}" + ("" if safe else " (unsafe: may change training)"),
                kind=lsp.CodeActionKind.QuickFix,
                diagnostics=[_to_lsp(view, diag, where)],
                is_preferred=safe,
                edit=lsp.WorkspaceEdit(changes=changes),
            ))
        for diag, where_uri, where in _placed(view, found):
            if where_uri == uri and _overlaps(where, params.range):
                disable = _disable_for_line(view, diag, where)
                if disable is not None:
                    actions.append(disable)
    fix_all = _fix_all(view)
    if fix_all is not None and (not wanted or any(k in wanted for k in (lsp.CodeActionKind.QuickFix, FIX_ALL, "source.fixAll", "source"))):
        actions.append(fix_all)
    return actions


def _disable_for_line(view, diag: Diagnostic, where: lsp.Range) -> Optional[lsp.CodeAction]:
    """ruff's "Disable for this line": ``# noqa: CODE`` at the end of the finding's line (merged
    into a noqa comment the line has), as ``ampfix check --add-noqa`` writes it."""
    from ampfix.noqa import add_noqa

    if diag.code == "AMP001":
        return None  # a syntax error is not suppressed
    program = view.program
    located = Locator(program)
    row = located.position(diag.start).row
    diag_at_row = Diagnostic(diag.code, diag.name, diag.message, diag.start, diag.end)
    diag_at_row.location = located.position(diag.start)
    new_program, added, _ = add_noqa(program, [diag_at_row])
    if not added:
        return None
    start, end = located.line_start(row), located.line_end(row)
    new_line = new_program[start:len(new_program) - (len(program) - end)]
    placed = view.place(start, end)
    if placed is None:
        return None
    return lsp.CodeAction(
        title=f"ampfix ({diag.code}): Disable for this line",
        kind=lsp.CodeActionKind.QuickFix,
        diagnostics=[_to_lsp(view, diag, where)],
        edit=lsp.WorkspaceEdit(changes={placed[0]: [lsp.TextEdit(range=placed[1], new_text=new_line)]}),
    )


def _fix_all(view) -> Optional[lsp.CodeAction]:
    if not _checkable(view):
        return None
    unsafe = _State.editor.unsafe_fixes
    try:
        result = fix_source(view.program, view.path, _settings(view.path), unsafe_fixes=unsafe)
    except Exception:  # a fix that would break the code is never offered
        return None
    fixed = view.fixed_documents(result.source) if result.changed else {}
    if not fixed:
        return None
    changes = {}
    for uri, text in fixed.items():
        document = server.workspace.get_text_document(uri)
        changes[uri] = [lsp.TextEdit(range=_range(document, 0, len(document.source)), new_text=text)]
    return lsp.CodeAction(
        title="ampfix: fix all problems" + (" (unsafe fixes included)" if unsafe else " (safe fixes)"),
        kind=FIX_ALL,
        edit=lsp.WorkspaceEdit(changes=changes),
    )


@server.feature(lsp.TEXT_DOCUMENT_HOVER)
def hover(params: lsp.HoverParams) -> Optional[lsp.Hover]:
    uri = params.text_document.uri
    view = _view(uri)
    point = lsp.Range(start=params.position, end=params.position)
    for diag, where_uri, where in _placed(view, _findings(view)):
        if where_uri == uri and _overlaps(where, point):
            text = rule_doc(diag.code) or diag.message
            return lsp.Hover(contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=text), range=where)
    return None
