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

Keeping up with typing: the findings of a document are analysed on one background thread and
kept per document version; edits are coalesced (a short debounce, and the latest version wins:
an analysis whose version was overtaken is never published); code actions and hover answer from
that cache for the range asked (no analysis on a cursor move), waiting only for the findings of
the current version; where the editor resolves code actions (``codeAction/resolve``), a fix's
edit comes once the fix is judged and "fix all"'s when it is chosen, so that the actions are
offered as soon as the findings are published.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import unquote, urlparse

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer
from pygls.workspace import TextDocument

from ampfix import __version__
from ampfix.diagnostics import Applicability, Diagnostic
from ampfix.docs import rule_doc, rule_doc_url
from ampfix.engine import analyse_source, fix_source, validate_fixes
from ampfix.notebook import Notebook
from ampfix.report import level_of
from ampfix.rewrite import RewriteError, resolve_fix
from ampfix.settings import (
    CONFIG_NAMES,
    CliOverrides,
    ConfigError,
    FileConfig,
    Settings,
    build_settings,
    default_settings,
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
    # the analysis thread holds the GIL while it analyses and judges fixes; a request answered
    # from the cache, or an edit to be queued, needs it a few times (read, answer, write), each a
    # wait of up to the switch interval (5 ms by default). At 0.1 ms, on a loaded machine, a code
    # action during an analysis of a 5,000-line document took 21 ms instead of 45 and a burst of
    # 10 edits 81 instead of 261 (bench/server_latency.py); with no request waiting it never switches.
    sys.setswitchinterval(0.0001)
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
    generation = 0  # raised when the settings change: every cached analysis is out of date


def _show_error(message: str) -> None:
    params = lsp.ShowMessageParams(type=lsp.MessageType.Error, message=f"ampfix: {message}")
    loop = _ANALYSER.loop_if_other_thread()
    if loop is not None:  # the analysis thread reads the settings: messages go out from the loop
        loop.call_soon_threadsafe(server.window_show_message, params)
    else:
        server.window_show_message(params)


def _use_editor_settings(options: Any) -> None:
    _State.editor, problems = editor_settings(options)
    _State.by_folder = {}
    _State.generation += 1
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
        _State.generation += 1
        _republish_all()


# -- where the findings are -------------------------------------------------------------------


def _path(uri: str) -> str:
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else uri


def _snapshot(document) -> TextDocument:
    """A copy of a document's text as it is now: the analysis thread reads it while the editor's
    next edit changes the workspace's document."""
    return TextDocument(document.uri, document.source, document.version, position_codec=document.position_codec)


class _TextView:
    """One Python file: the program is the document's text (a snapshot of it)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.path = _path(uri)
        self.document = _snapshot(server.workspace.get_text_document(uri))
        self.program = self.document.source
        self.cell_uris = [uri]
        self.key = (self.document.version,)

    def place(self, start: int, end: int) -> Optional[tuple[str, lsp.Range]]:
        """The document and range of a span of the program."""
        return self.uri, _range(self.document, start, end)

    def document_of(self, uri: str) -> TextDocument:
        return self.document

    def version_of(self, uri: str) -> Optional[int]:
        return self.document.version

    def fixed_documents(self, program: str) -> dict[str, str]:
        return {self.uri: program} if program != self.program else {}


class _NotebookView:
    """A notebook document: its code cells as one program (ampfix/notebook.py), spans of the
    program placed on the cell that holds them."""

    def __init__(self, notebook: lsp.NotebookDocument):
        self.uri = notebook.uri
        self.path = _path(notebook.uri)
        self.cell_uris = [cell.document for cell in notebook.cells]
        self.documents = [_snapshot(server.workspace.get_text_document(uri)) for uri in self.cell_uris]
        kinds = ["code" if cell.kind == lsp.NotebookCellKind.Code else "markdown" for cell in notebook.cells]
        self.cells = Notebook.from_cells([(kind, doc.source) for kind, doc in zip(kinds, self.documents)])
        self.program = self.cells.program
        self.key = _notebook_key(notebook)
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

    def document_of(self, uri: str) -> TextDocument:
        return self.documents[self.cell_uris.index(uri)]

    def version_of(self, uri: str) -> Optional[int]:
        return self.document_of(uri).version

    def fixed_documents(self, program: str) -> dict[str, str]:
        return {
            self.cell_uris[index]: text
            for index, text in self.cells.cell_sources(program).items()
            if text != self.documents[index].source
        }


def _notebook_key(notebook: lsp.NotebookDocument) -> tuple:
    """What a notebook's findings depend on: its cells (in order) and each cell's version."""
    versions = []
    for cell in notebook.cells:
        document = server.workspace.get_text_document(cell.document)
        versions.append((cell.document, cell.kind, document.version))
    return (notebook.version, tuple(versions))


def _owner(uri: str) -> tuple[str, Optional[lsp.NotebookDocument]]:
    """The document whose findings ``uri``'s are: a notebook for one of its cells, else itself."""
    notebook = server.workspace.get_notebook_document(cell_uri=uri)
    return (notebook.uri, notebook) if notebook is not None else (uri, None)


def _view(uri: str):
    notebook = server.workspace.get_notebook_document(cell_uri=uri)
    return _NotebookView(notebook) if notebook is not None else _TextView(uri)


def _checkable(view) -> bool:
    """A notebook, or a Python file (not, say, a notebook's JSON opened as text)."""
    return isinstance(view, _NotebookView) or view.path.endswith((".py", ".pyi"))


def _findings(view) -> list[Diagnostic]:
    """The findings of a view, their fixes not yet judged (``_validate``)."""
    if not _checkable(view):
        return []
    return analyse_source(view.program, view.path, _settings(view.path))


def _validate(analysis: "_Analysis") -> None:
    """Withdraw the fixes that would make the document worse (the findings stay as published)."""
    view = analysis.view
    if analysis.diagnostics:
        validate_fixes(view.program, view.path, _settings(view.path), analysis.diagnostics)


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


# -- the analysis: one per document version, off the request thread ---------------------------

# An edit that comes within TYPING_S of the previous one (typing, a burst of changes) waits
# DEBOUNCE_S for the next before it is analysed, so that a burst is analysed once, for its last
# version; a lone edit, an open, a save or a request that needs the findings does not wait.
DEBOUNCE_S = 0.015
TYPING_S = 0.1
_last_edit: dict[str, float] = {}


def _edit_delay(owner: str) -> float:
    now = time.monotonic()
    previous = _last_edit.get(owner)
    _last_edit[owner] = now
    return DEBOUNCE_S if previous is not None and now - previous < TYPING_S else 0.0


@dataclass
class _Finding:
    diag: Diagnostic
    uri: str
    where: lsp.Range
    published: lsp.Diagnostic


@dataclass
class _Analysis:
    """The findings of one version of a document, placed, with what the requests derive from them
    (each computed once, when first asked)."""

    key: tuple
    view: Any
    findings: list[_Finding]
    diagnostics: list[Diagnostic] = field(default_factory=list)  # every finding, placed or not
    fix_edits: dict[int, Any] = field(default_factory=dict)  # id(finding) -> its quick fix's edits
    fix_all: Any = None  # the fix-all action with its edit, once resolved
    fix_all_resolved: bool = False
    locator: Optional[Locator] = None
    noqa_lines: Optional[dict[int, Optional[str]]] = None  # id(finding) -> its "disable" line
    judged: bool = False  # its fixes are judged (``_validate``): the refused ones withdrawn


def _current_key(owner: str, notebook: Optional[lsp.NotebookDocument]) -> Optional[tuple]:
    """The key the analysis of ``owner`` as it is now has (None: not open)."""
    if notebook is not None:
        return (_State.generation, _notebook_key(notebook))
    document = server.workspace.text_documents.get(owner)
    return None if document is None else (_State.generation, (document.version,))


class _Analyser:
    """One thread that analyses documents, the latest version of each winning: a request for a
    document replaces the one waiting for it, and an analysis overtaken by an edit while it ran is
    dropped, never published. Results are kept (one per document) for the requests."""

    def __init__(self):
        self.results: dict[str, _Analysis] = {}
        # the analysis last published for each document, its fixes possibly still being judged:
        # what a request that needs only the findings (hover, the offer of a quick fix whose
        # edit the editor resolves later) is answered from, without waiting for the judgement
        self.published: dict[str, _Analysis] = {}
        self._pending: dict[str, tuple[float, Any, tuple]] = {}  # owner -> (due, view, key)
        self._waiters: dict[tuple[str, tuple], list[asyncio.Future]] = {}
        # the (owner, key) being analysed and not yet kept: a request for it waits for that
        # analysis instead of queuing a second one (which would publish the same version twice)
        self._running: Optional[tuple[str, tuple]] = None
        self._condition = threading.Condition()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None

    def submit(self, owner: str, view, delay: float = 0.0) -> None:
        """Analyse ``view`` (taken on the event loop's thread) after ``delay`` unless a newer
        version of the document comes first; publish its diagnostics if still current then."""
        self._loop = asyncio.get_running_loop()
        key = (_State.generation, view.key)
        cached = self.results.get(owner)
        if cached is not None and cached.key == key:
            return  # this version is analysed already (a save, a re-open)
        with self._condition:
            self._pending[owner] = (time.monotonic() + delay, view, key)
            self._condition.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="ampfix-analysis", daemon=True)
            self._thread.start()

    async def current(self, owner: str, notebook: Optional[lsp.NotebookDocument]) -> Optional[_Analysis]:
        """The analysis of ``owner``'s current version: from the cache, or the one running or due
        for it (brought forward: a request is waiting)."""
        key = _current_key(owner, notebook)
        if key is None:
            return None
        cached = self.results.get(owner)
        if cached is not None and cached.key == key:
            return cached
        future = asyncio.get_running_loop().create_future()
        self._waiters.setdefault((owner, key), []).append(future)
        with self._condition:
            pending = self._pending.get(owner)
            if pending is not None and pending[2] == key:
                self._pending[owner] = (0.0, pending[1], key)
                self._condition.notify()
                queued = True
            else:
                queued = self._running == (owner, key)
        if not queued:
            self.submit(owner, _NotebookView(notebook) if notebook is not None else _TextView(owner))
        return await future

    async def findings(self, owner: str, notebook: Optional[lsp.NotebookDocument]) -> Optional[_Analysis]:
        """The analysis of ``owner``'s current version as soon as its findings are known: the
        published one while its fixes are judged, else as ``current``."""
        key = _current_key(owner, notebook)
        published = self.published.get(owner)
        if key is not None and published is not None and published.key == key:
            return published
        return await self.current(owner, notebook)

    def loop_if_other_thread(self) -> Optional[asyncio.AbstractEventLoop]:
        """The event loop, when called on the analysis thread (None on the loop's own)."""
        return self._loop if threading.current_thread() is self._thread else None

    def forget(self, owner: str) -> None:
        self.results.pop(owner, None)
        self.published.pop(owner, None)
        with self._condition:
            self._pending.pop(owner, None)

    def _next(self) -> tuple[str, Any, tuple]:
        with self._condition:
            while True:
                now = time.monotonic()
                due = [(when, owner) for owner, (when, _, _) in self._pending.items()]
                if due:
                    when, owner = min(due)
                    if when <= now:
                        _, view, key = self._pending.pop(owner)
                        self._running = (owner, key)
                        return owner, view, key
                    self._condition.wait(when - now)
                else:
                    self._condition.wait()

    def _work(self) -> None:
        while True:
            owner, view, key = self._next()
            started = time.perf_counter()
            try:
                analysis = _analyse(view, key)
            except Exception as exc:  # noqa: BLE001 - a bug must not stop the thread: the next edit is analysed
                self._loop.call_soon_threadsafe(self._failed, owner, key, exc)
                continue
            elapsed_ms = (time.perf_counter() - started) * 1000
            # the findings do not depend on which fixes are offered: published before those are
            # judged (two thirds of an analysis of a file with fixes), kept for the requests after
            self._loop.call_soon_threadsafe(self._publish, owner, analysis, elapsed_ms)
            time.sleep(0.002)  # lets the event loop take the GIL and publish before the validation
            if owner in self._pending:
                self._running = None
                continue  # a newer version is due: its analysis will serve the requests
            try:
                _validate(analysis)
            except Exception as exc:  # noqa: BLE001 - as above
                self._loop.call_soon_threadsafe(self._failed, owner, key, exc)
                continue
            analysis.judged = True
            self._loop.call_soon_threadsafe(self._done, owner, analysis)
            time.sleep(0.002)  # lets the event loop answer the waiting requests before the preparation
            if analysis.findings and owner not in self._pending:  # no newer version waiting: prepare
                try:
                    _prepare_noqa_lines(analysis)
                except Exception:  # noqa: BLE001 - each request then computes its own line
                    analysis.noqa_lines = None

    def _publish(self, owner: str, analysis: _Analysis, elapsed_ms: float) -> None:
        """On the event loop: publish an analysis's findings, unless the document moved on."""
        current = self._current(owner, analysis)
        # the editor's output channel (ruff's server logs its checks likewise)
        server.window_log_message(lsp.LogMessageParams(type=lsp.MessageType.Log, message=(
            f"ampfix: analysed {owner} (version {analysis.view.key[0]}) in {elapsed_ms:.0f} ms"
            + ("" if current else "; not published: the document has changed since"))))
        if current:
            self.published[owner] = analysis
            _publish_analysis(analysis)

    @staticmethod
    def _current(owner: str, analysis: _Analysis) -> bool:
        notebook = server.workspace.get_notebook_document(notebook_uri=owner)
        return _current_key(owner, notebook) == analysis.key

    def _done(self, owner: str, analysis: _Analysis) -> None:
        """On the event loop: keep an analysis whose fixes are judged for the requests (code
        actions, hover), unless the document moved on; the requests made for an older version
        are answered from it too (theirs was overtaken and will never be kept)."""
        self._finished(owner, analysis.key)
        if not self._current(owner, analysis):
            return  # overtaken: the newer version's analysis is due
        self.results[owner] = analysis
        for waiting in [waiting for waiting in self._waiters if waiting[0] == owner]:
            for future in self._waiters.pop(waiting):
                if not future.done():
                    future.set_result(analysis)

    def _finished(self, owner: str, key: tuple) -> None:
        """On the event loop, as the result is kept: later requests find it in ``results``."""
        with self._condition:
            if self._running == (owner, key):
                self._running = None

    def _failed(self, owner: str, key: tuple, exc: Exception) -> None:
        self._finished(owner, key)
        for future in self._waiters.pop((owner, key), []):
            if not future.done():
                future.set_exception(exc)


def _analyse(view, key: tuple) -> _Analysis:
    """On the analysis thread: the findings of a view, placed and converted for the editor."""
    found = _findings(view)
    findings = [_Finding(diag, uri, where, _to_lsp(view, diag, where)) for diag, uri, where in _placed(view, found)]
    return _Analysis(key, view, findings, found)


_ANALYSER = _Analyser()


def _publish_analysis(analysis: _Analysis) -> None:
    view = analysis.view
    by_uri: dict[str, list[lsp.Diagnostic]] = {uri: [] for uri in view.cell_uris}
    for finding in analysis.findings:
        by_uri.setdefault(finding.uri, []).append(finding.published)
    for uri, diagnostics in by_uri.items():
        server.text_document_publish_diagnostics(
            lsp.PublishDiagnosticsParams(uri=uri, version=view.version_of(uri), diagnostics=diagnostics))


def _publish(uri: str, delay: float = 0.0) -> None:
    if uri in server.workspace.text_documents:
        _ANALYSER.submit(uri, _TextView(uri), delay)


def _publish_notebook(notebook_uri: str, delay: float = 0.0) -> None:
    notebook = server.workspace.get_notebook_document(notebook_uri=notebook_uri)
    if notebook is not None:
        _ANALYSER.submit(notebook_uri, _NotebookView(notebook), delay)


# -- documents --------------------------------------------------------------------------------


@server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
def did_open(params: lsp.DidOpenTextDocumentParams) -> None:
    if server.workspace.get_notebook_document(cell_uri=params.text_document.uri) is None:
        _publish(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
def did_change(params: lsp.DidChangeTextDocumentParams) -> None:
    _publish(params.text_document.uri, _edit_delay(params.text_document.uri))


@server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
def did_save(params: lsp.DidSaveTextDocumentParams) -> None:
    _publish(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
def did_close(params: lsp.DidCloseTextDocumentParams) -> None:
    _ANALYSER.forget(params.text_document.uri)
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
    _publish_notebook(params.notebook_document.uri, _edit_delay(params.notebook_document.uri))


@server.feature(lsp.NOTEBOOK_DOCUMENT_DID_SAVE)
def notebook_did_save(params: lsp.DidSaveNotebookDocumentParams) -> None:
    _publish_notebook(params.notebook_document.uri)


@server.feature(lsp.NOTEBOOK_DOCUMENT_DID_CLOSE)
def notebook_did_close(params: lsp.DidCloseNotebookDocumentParams) -> None:
    _ANALYSER.forget(params.notebook_document.uri)
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


def _resolves_edits() -> bool:
    """Whether the editor resolves a code action's edit lazily (``codeAction/resolve``)."""
    document = server.client_capabilities.text_document
    action = document.code_action if document is not None else None
    support = action.resolve_support if action is not None else None
    return support is not None and "edit" in support.properties


@server.feature(
    lsp.TEXT_DOCUMENT_CODE_ACTION,
    lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix, FIX_ALL], resolve_provider=True),
)
async def code_actions(params: lsp.CodeActionParams) -> list[lsp.CodeAction]:
    """From the analysis of the current version, for the range asked: nothing is analysed again
    on a cursor move. Where the editor resolves edits (``codeAction/resolve``), the actions are
    offered as soon as the findings are published, and an edit not yet computed or judged comes
    on resolve: a fix's edit only once its fix is judged, fix-all's when it is chosen."""
    uri = params.text_document.uri
    owner, notebook = _owner(uri)
    lazy = _resolves_edits()
    analysis = await (_ANALYSER.findings if lazy else _ANALYSER.current)(owner, notebook)
    if analysis is None:
        return []
    wanted = params.context.only
    actions: list[lsp.CodeAction] = []
    here = [(i, f) for i, f in enumerate(analysis.findings) if f.uri == uri and _overlaps(f.where, params.range)]
    if not wanted or lsp.CodeActionKind.QuickFix in wanted:
        for index, finding in here:
            quick = _quick_fix(analysis, finding) if analysis.judged else _quick_fix_offer(analysis, owner, index)
            if quick is not None:
                actions.append(quick)
        for index, finding in here:
            ready = analysis.noqa_lines is not None or not lazy
            disable = _disable_for_line(analysis, finding) if ready else _disable_offer(analysis, owner, index)
            if disable is not None:
                actions.append(disable)
    if not wanted or any(k in wanted for k in (lsp.CodeActionKind.QuickFix, FIX_ALL, "source.fixAll", "source")):
        fix_all = _fix_all_offer(analysis, owner)
        if fix_all is not None:
            actions.append(fix_all)
    return actions


def _offers_fix(fix) -> bool:
    # a display-only fix is a suggestion for a person: shown in the diagnostic's text, never applied
    return fix is not None and fix.applicability is not Applicability.DISPLAY_ONLY


def _fix_action(finding: _Finding, fix, **edit_or_data) -> lsp.CodeAction:
    safe = fix.applicability is Applicability.SAFE
    return lsp.CodeAction(
        title=f"ampfix ({finding.diag.code}): {fix.message}" + ("" if safe else " (unsafe: may change training)"),
        kind=lsp.CodeActionKind.QuickFix,
        diagnostics=[finding.published],
        is_preferred=safe,
        **edit_or_data,
    )


def _quick_fix(analysis: _Analysis, finding: _Finding) -> Optional[lsp.CodeAction]:
    """A finding's judged fix, with its edit."""
    fix = finding.diag.fix
    if not _offers_fix(fix):
        return None
    if id(finding) not in analysis.fix_edits:
        analysis.fix_edits[id(finding)] = _fix_edits(analysis.view, finding.diag)
    changes = analysis.fix_edits[id(finding)]
    if changes is None:
        return None
    return _fix_action(finding, fix, edit=lsp.WorkspaceEdit(changes=changes))


def _resolve_data(analysis: _Analysis, owner: str, **finding) -> dict:
    """What an action offered without its edit carries to ``codeAction/resolve``: the document,
    the version it was offered for and, for a finding's action, which finding and action."""
    return {"owner": owner, "key": repr(analysis.key), **finding}


def _quick_fix_offer(analysis: _Analysis, owner: str, index: int) -> Optional[lsp.CodeAction]:
    """A finding's fix while it is being judged: offered without its edit, which resolve gives
    once the fix is judged (none, with the reason shown, if it is refused)."""
    finding = analysis.findings[index]
    fix = finding.diag.fix  # read once: the analysis thread may withdraw it meanwhile
    if not _offers_fix(fix):
        return None
    return _fix_action(finding, fix, data=_resolve_data(analysis, owner, finding=index, action="fix"))


def _disable_offer(analysis: _Analysis, owner: str, index: int) -> Optional[lsp.CodeAction]:
    """"Disable for this line" before the lines are prepared: its edit comes on resolve."""
    finding = analysis.findings[index]
    if finding.diag.code == "AMP001":
        return None  # a syntax error is not suppressed
    return _disable_action(finding, data=_resolve_data(analysis, owner, finding=index, action="disable"))


def _disable_action(finding: _Finding, **edit_or_data) -> lsp.CodeAction:
    return lsp.CodeAction(
        title=f"ampfix ({finding.diag.code}): Disable for this line",
        kind=lsp.CodeActionKind.QuickFix,
        diagnostics=[finding.published],
        **edit_or_data,
    )


def _disable_for_line(analysis: _Analysis, finding: _Finding) -> Optional[lsp.CodeAction]:
    """ruff's "Disable for this line": ``# noqa: CODE`` at the end of the finding's line (merged
    into a noqa comment the line has), as ``ampfix check --add-noqa`` writes it."""
    if finding.diag.code == "AMP001":
        return None  # a syntax error is not suppressed
    prepared = analysis.noqa_lines
    if prepared is None or id(finding) not in prepared:
        new_line = _noqa_line(analysis, finding)
    else:
        new_line = prepared[id(finding)]
    if new_line is None:
        return None
    start, end = _line_span(analysis, finding.diag)
    placed = analysis.view.place(start, end)
    if placed is None:
        return None
    return _disable_action(
        finding, edit=lsp.WorkspaceEdit(changes={placed[0]: [lsp.TextEdit(range=placed[1], new_text=new_line)]}))


def _locator(analysis: _Analysis) -> Locator:
    if analysis.locator is None:
        analysis.locator = Locator(analysis.view.program)
    return analysis.locator


def _line_span(analysis: _Analysis, diag: Diagnostic) -> tuple[int, int]:
    located = _locator(analysis)
    row = located.position(diag.start).row
    return located.line_start(row), located.line_end(row)


def _at_row(analysis: _Analysis, diag: Diagnostic) -> Diagnostic:
    at_row = Diagnostic(diag.code, diag.name, diag.message, diag.start, diag.end)
    at_row.location = _locator(analysis).position(diag.start)
    return at_row


def _noqa_line(analysis: _Analysis, finding: _Finding) -> Optional[str]:
    """The finding's line with its noqa directive (None: none can be added), from the program."""
    from ampfix.noqa import add_noqa

    program = analysis.view.program
    new_program, added, _ = add_noqa(program, [_at_row(analysis, finding.diag)])
    if not added:
        return None
    start, end = _line_span(analysis, finding.diag)
    return new_program[start:len(new_program) - (len(program) - end)]


def _prepare_noqa_lines(analysis: _Analysis) -> None:
    """On the analysis thread, after publishing: every finding's "disable" line from one pass of
    add_noqa over the program (it tokenizes the whole program: once, not once per request). A
    row with findings of different codes is left to be computed on request, for its own code."""
    from ampfix.noqa import add_noqa

    if analysis.locator is None:
        analysis.locator = Locator(analysis.view.program)
    codes_by_row: dict[int, set[str]] = {}
    rows = {}
    for finding in analysis.findings:
        if finding.diag.code != "AMP001":
            rows[id(finding)] = row = analysis.locator.position(finding.diag.start).row
            codes_by_row.setdefault(row, set()).add(finding.diag.code)
    program = analysis.view.program
    new_program, _, _ = add_noqa(program, [_at_row(analysis, f.diag) for f in analysis.findings if id(f) in rows])
    new_lines = Locator(new_program)
    lines: dict[int, Optional[str]] = {}
    for finding in analysis.findings:
        row = rows.get(id(finding))
        if row is None or len(codes_by_row[row]) > 1:
            continue
        new_line = new_program[new_lines.line_start(row):new_lines.line_end(row)]
        start, end = _line_span(analysis, finding.diag)
        lines[id(finding)] = new_line if new_line != program[start:end] else None
    analysis.noqa_lines = lines


def _fix_all_title() -> str:
    return "ampfix: fix all problems" + (" (unsafe fixes included)" if _State.editor.unsafe_fixes else " (safe fixes)")


def _fix_all_offer(analysis: _Analysis, owner: str) -> Optional[lsp.CodeAction]:
    """Fix-all when a finding has a fix it applies: without its edit (resolved on demand) where
    the editor resolves edits, else with it."""
    if not _checkable(analysis.view):
        return None
    if not any(f.diag.fix_applies(_State.editor.unsafe_fixes) for f in analysis.findings):
        return None
    if _resolves_edits():
        return lsp.CodeAction(title=_fix_all_title(), kind=FIX_ALL, data=_resolve_data(analysis, owner))
    return _resolved_fix_all(analysis)


def _resolved_fix_all(analysis: _Analysis) -> Optional[lsp.CodeAction]:
    if not analysis.fix_all_resolved:
        analysis.fix_all = _fix_all(analysis.view)
        analysis.fix_all_resolved = True
    return analysis.fix_all


@server.feature(lsp.CODE_ACTION_RESOLVE)
async def resolve_code_action(action: lsp.CodeAction) -> lsp.CodeAction:
    """The edit of an action offered without one, for the document's current version: fix-all's
    (computed once per version, on a worker thread so that other requests are answered
    meanwhile), or a finding's fix or "disable" line once that version's fixes are judged."""
    data = action.data if isinstance(action.data, dict) else {}
    owner = data.get("owner")
    if not isinstance(owner, str):
        return action
    notebook = server.workspace.get_notebook_document(notebook_uri=owner)
    analysis = await _ANALYSER.current(owner, notebook)
    if analysis is None:
        return action
    if action.kind == FIX_ALL:
        resolved = await asyncio.to_thread(_resolved_fix_all, analysis)
        # none: the fixes cancel out or are refused together
        action.edit = resolved.edit if resolved is not None else lsp.WorkspaceEdit(changes={})
    elif data.get("action") in ("fix", "disable"):
        action.edit = _resolved_finding_edit(analysis, data)
    return action


def _resolved_finding_edit(analysis: _Analysis, data: dict) -> lsp.WorkspaceEdit:
    """A quick fix's edit from the judged analysis of the version it was offered for (none if
    the document has changed since, or if its fix was refused: the editor is told why)."""
    index = data.get("finding")
    if data.get("key") != repr(analysis.key) or not isinstance(index, int) or not 0 <= index < len(analysis.findings):
        return lsp.WorkspaceEdit(changes={})  # offered for an older version: its places are gone
    finding = analysis.findings[index]
    resolved = _quick_fix(analysis, finding) if data["action"] == "fix" else _disable_for_line(analysis, finding)
    if resolved is None:
        if data["action"] == "fix" and finding.diag.fix_refused:
            _show_error(finding.diag.fix_refused)
        return lsp.WorkspaceEdit(changes={})
    return resolved.edit


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
        document = view.document_of(uri)
        changes[uri] = [lsp.TextEdit(range=_range(document, 0, len(document.source)), new_text=text)]
    return lsp.CodeAction(title=_fix_all_title(), kind=FIX_ALL, edit=lsp.WorkspaceEdit(changes=changes))


@server.feature(lsp.TEXT_DOCUMENT_HOVER)
async def hover(params: lsp.HoverParams) -> Optional[lsp.Hover]:
    uri = params.text_document.uri
    owner, notebook = _owner(uri)
    analysis = await _ANALYSER.findings(owner, notebook)
    if analysis is None:
        return None
    point = lsp.Range(start=params.position, end=params.position)
    for finding in analysis.findings:
        if finding.uri == uri and _overlaps(finding.where, point):
            text = rule_doc(finding.diag.code) or finding.diag.message
            return lsp.Hover(contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=text), range=finding.where)
    return None
