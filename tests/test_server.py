"""`ampfix server`, driven end to end by a real LSP client (pytest-lsp): diagnostics from the
editor's text, a fix applied through a code action, fix-all, and the rule's document on hover."""

import asyncio
import sys

import pytest

pytest_lsp = pytest.importorskip("pytest_lsp")
from lsprotocol import types as lsp  # noqa: E402
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities  # noqa: E402

OLD = "import torch\n\nscaler = torch.cuda.amp.GradScaler()\n"
BUG = (
    "import torch\nscaler = torch.amp.GradScaler('cuda')\nfor x in loader:\n"
    "    scaler.scale(model(x)).backward()\n    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
    "    scaler.step(optimizer)\n    scaler.update()\n"
)


def answer_registrations(lsp_client: LanguageClient) -> None:
    """Accept client/registerCapability as an editor does (the server asks to watch its
    configuration files), recording what was registered in ``lsp_client.registrations``."""
    lsp_client.registrations = []

    @lsp_client.feature(lsp.CLIENT_REGISTER_CAPABILITY)
    def register(params: lsp.RegistrationParams):
        lsp_client.registrations.extend(params.registrations)


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[sys.executable, "-m", "ampfix", "server"]))
async def client(lsp_client: LanguageClient, tmp_path):
    answer_registrations(lsp_client)
    await lsp_client.initialize_session(
        lsp.InitializeParams(capabilities=client_capabilities("visual-studio-code"), root_uri=tmp_path.as_uri())
    )
    yield
    await lsp_client.shutdown_session()


async def open_document(client: LanguageClient, uri: str, text: str):
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(text_document=lsp.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
    await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    return client.diagnostics[uri]


async def resolved(client: LanguageClient, action: lsp.CodeAction) -> lsp.CodeAction:
    """The action with its edit: fix-all comes without one to an editor that resolves edits
    (VS Code's capabilities do), and ``codeAction/resolve`` computes it."""
    assert action.edit is None and action.data is not None
    return await client.code_action_resolve_async(action)


async def edit_of(client: LanguageClient, action: lsp.CodeAction) -> lsp.WorkspaceEdit:
    """The action's edit as an editor gets it when the action is chosen: with the action, or,
    for one offered before its edit was ready, from ``codeAction/resolve``."""
    if action.edit is None:
        action = await client.code_action_resolve_async(action)
    return action.edit


def apply(text: str, edits: list[lsp.TextEdit]) -> str:
    lines = text.splitlines(keepends=True)

    def offset(p: lsp.Position) -> int:
        return sum(len(line) for line in lines[: p.line]) + p.character

    for edit in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        text = text[: offset(edit.range.start)] + edit.new_text + text[offset(edit.range.end):]
    return text


async def test_diagnostics_come_from_the_editor_text(client: LanguageClient, tmp_path):
    uri = (tmp_path / "train.py").as_uri()  # never written to disk: the buffer is what is checked
    [diagnostic] = await open_document(client, uri, OLD)
    assert diagnostic.code == "AMP102" and diagnostic.source == "ampfix"
    assert diagnostic.range.start == lsp.Position(line=2, character=9) and diagnostic.severity == lsp.DiagnosticSeverity.Warning
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[lsp.TextDocumentContentChangeWholeDocument(text="import torch\n")],
    ))
    await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    assert list(client.diagnostics[uri]) == []


async def test_a_code_action_applies_the_fix(client: LanguageClient, tmp_path):
    uri = (tmp_path / "train.py").as_uri()
    [diagnostic] = await open_document(client, uri, OLD)
    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), range=diagnostic.range,
        context=lsp.CodeActionContext(diagnostics=[diagnostic]),
    ))
    [quick] = [a for a in actions if a.kind == lsp.CodeActionKind.QuickFix and "AMP102" in a.title and "Disable" not in a.title]
    assert quick.is_preferred and "unsafe" not in quick.title
    fixed = apply(OLD, (await edit_of(client, quick)).changes[uri])
    assert fixed == 'import torch\n\nscaler = torch.amp.GradScaler("cuda")\n'
    [fix_all] = [await resolved(client, a) for a in actions if a.kind == "source.fixAll.ampfix"]
    assert apply(OLD, fix_all.edit.changes[uri]) == fixed


async def test_an_unsafe_fix_is_labelled_and_not_preferred(client: LanguageClient, tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.ampfix]\npreview = true\n")  # AMP201 is a preview rule
    uri = (tmp_path / "loop.py").as_uri()
    diagnostics = await open_document(client, uri, BUG)
    [clip] = [d for d in diagnostics if d.code == "AMP201"]
    assert clip.severity == lsp.DiagnosticSeverity.Error and clip.related_information  # the evidence
    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), range=clip.range,
        context=lsp.CodeActionContext(diagnostics=[clip]),
    ))
    [quick] = [a for a in actions if "AMP201" in a.title and "Disable" not in a.title]
    assert "unsafe" in quick.title and not quick.is_preferred
    assert "scaler.unscale_(optimizer)" in apply(BUG, (await edit_of(client, quick)).changes[uri])


async def test_hover_shows_the_rule_document(client: LanguageClient, tmp_path):
    uri = (tmp_path / "train.py").as_uri()
    [diagnostic] = await open_document(client, uri, OLD)
    result = await client.text_document_hover_async(
        lsp.HoverParams(text_document=lsp.TextDocumentIdentifier(uri=uri), position=diagnostic.range.start)
    )
    assert result.contents.kind == lsp.MarkupKind.Markdown
    assert result.contents.value.startswith("# deprecated-grad-scaler (AMP102)")


NOTEBOOK_CELLS = [
    ("code", "import torch\n"),
    ("markdown", "# Training\n"),
    ("code", "%matplotlib inline\nscaler = torch.cuda.amp.GradScaler()\n"),
]


async def open_notebook(client: LanguageClient, tmp_path, cells=NOTEBOOK_CELLS):
    path = tmp_path / "train.ipynb"
    uris = [f"vscode-notebook-cell:{path}#cell{index}" for index in range(len(cells))]
    kinds = {"code": lsp.NotebookCellKind.Code, "markdown": lsp.NotebookCellKind.Markup}
    client.notebook_document_did_open(lsp.DidOpenNotebookDocumentParams(
        notebook_document=lsp.NotebookDocument(
            uri=path.as_uri(), notebook_type="jupyter-notebook", version=1,
            cells=[lsp.NotebookCell(kind=kinds[kind], document=uri) for (kind, _), uri in zip(cells, uris)],
        ),
        cell_text_documents=[
            lsp.TextDocumentItem(uri=uri, language_id="python" if kind == "code" else "markdown", version=1, text=text)
            for (kind, text), uri in zip(cells, uris)
        ],
    ))
    while not all(uri in client.diagnostics for uri in uris):
        await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    return uris


async def test_a_notebooks_findings_are_published_on_their_cells(client: LanguageClient, tmp_path):
    uris = await open_notebook(client, tmp_path)
    assert list(client.diagnostics[uris[0]]) == [] and list(client.diagnostics[uris[1]]) == []
    [diagnostic] = client.diagnostics[uris[2]]  # `import torch` of cell 1 resolves in cell 3
    assert diagnostic.code == "AMP102"
    assert diagnostic.range == lsp.Range(start=lsp.Position(line=1, character=9), end=lsp.Position(line=1, character=34))
    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uris[2]), range=diagnostic.range,
        context=lsp.CodeActionContext(diagnostics=[diagnostic]),
    ))
    [quick] = [a for a in actions if a.kind == lsp.CodeActionKind.QuickFix and "AMP102" in a.title and "Disable" not in a.title]
    quick_edit = await edit_of(client, quick)
    assert set(quick_edit.changes) == {uris[2]}
    fixed = apply(NOTEBOOK_CELLS[2][1], quick_edit.changes[uris[2]])
    assert fixed == '%matplotlib inline\nscaler = torch.amp.GradScaler("cuda")\n'  # the magic kept
    [fix_all] = [await resolved(client, a) for a in actions if a.kind == "source.fixAll.ampfix"]
    assert set(fix_all.edit.changes) == {uris[2]}
    assert apply(NOTEBOOK_CELLS[2][1], fix_all.edit.changes[uris[2]]) == fixed
    hover = await client.text_document_hover_async(
        lsp.HoverParams(text_document=lsp.TextDocumentIdentifier(uri=uris[2]), position=diagnostic.range.start)
    )
    assert hover.contents.value.startswith("# deprecated-grad-scaler (AMP102)")


async def test_a_fix_that_adds_an_import_edits_the_first_cell(client: LanguageClient, tmp_path):
    cells = [("code", "import os\n"), ("code", "from torch.cuda.amp import GradScaler\nscaler = GradScaler()\n")]
    uris = await open_notebook(client, tmp_path, cells)
    [diagnostic] = client.diagnostics[uris[1]]
    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uris[1]), range=diagnostic.range,
        context=lsp.CodeActionContext(diagnostics=[diagnostic]),
    ))
    [fix_all] = [await resolved(client, a) for a in actions if a.kind == "source.fixAll.ampfix"]
    texts = {uri: apply(text, fix_all.edit.changes.get(uri, [])) for (_, text), uri in zip(cells, uris)}
    program = "".join(texts[uri] for uri in uris)
    assert "torch.amp.GradScaler(\"cuda\")" in program and "torch.cuda.amp" not in program
    compile(program, "nb", "exec")


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[sys.executable, "-m", "ampfix", "server"]))
async def configured_client(lsp_client: LanguageClient, tmp_path):
    answer_registrations(lsp_client)
    await lsp_client.initialize_session(lsp.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"), root_uri=tmp_path.as_uri(),
        initialization_options={"ampfix": {"ignore": ["AMP102"], "extendSelect": ["AMP201"], "preview": True}},
    ))
    yield
    await lsp_client.shutdown_session()


async def test_the_editors_settings_select_rules_and_can_change(configured_client: LanguageClient, tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.ampfix]\nignore = ["AMP201"]\n')
    client = configured_client
    uri = (tmp_path / "train.py").as_uri()
    # the editor's layer is the command line's: it ignores AMP102 and brings AMP201 back
    found = await open_document(client, uri, OLD + BUG.split("\n", 1)[1])
    # preview is on: AMP213 too (the sample's scaler has no autocast)
    assert {d.code for d in found} == {"AMP201", "AMP213"}
    client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(settings={"ampfix": {"select": ["AMP1"]}}))
    await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    assert {d.code for d in client.diagnostics[uri]} == {"AMP102"}
    (tmp_path / "team.toml").write_text('select = ["AMP2"]\npreview = true\n')
    client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(settings={"configuration": str(tmp_path / "team.toml")}))
    await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    assert {d.code for d in client.diagnostics[uri]} == {"AMP201", "AMP213"}  # that file instead of pyproject.toml


async def test_a_bad_editor_setting_is_shown_and_left_out(configured_client: LanguageClient, tmp_path):
    client = configured_client
    client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(settings={"ampfix": {"selct": ["AMP1"], "ignore": "AMP102"}}))
    for _ in range(200):  # the client records window/showMessage as it comes
        if len(client.messages) >= 2:
            break
        await asyncio.sleep(0.05)
    messages = [m.message for m in client.messages]
    assert any("unknown setting `selct`" in m for m in messages)
    assert any("`ignore` must be a list of rule codes" in m for m in messages)
