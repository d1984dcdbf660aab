"""`ampfix server`, driven end to end by a real LSP client (pytest-lsp): diagnostics from the
editor's text, a fix applied through a code action, fix-all, and the rule's document on hover."""

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


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[sys.executable, "-m", "ampfix", "server"]))
async def client(lsp_client: LanguageClient, tmp_path):
    await lsp_client.initialize_session(
        lsp.InitializeParams(capabilities=client_capabilities("visual-studio-code"), root_uri=tmp_path.as_uri())
    )
    yield
    await lsp_client.shutdown_session()


async def open_document(client: LanguageClient, uri: str, text: str):
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(text_document=lsp.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
    await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    return client.diagnostics[uri]


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
    [quick] = [a for a in actions if a.kind == lsp.CodeActionKind.QuickFix and "AMP102" in a.title]
    assert quick.is_preferred and "unsafe" not in quick.title
    fixed = apply(OLD, quick.edit.changes[uri])
    assert fixed == 'import torch\n\nscaler = torch.amp.GradScaler("cuda")\n'
    [fix_all] = [a for a in actions if a.kind == "source.fixAll.ampfix"]
    assert apply(OLD, fix_all.edit.changes[uri]) == fixed


async def test_an_unsafe_fix_is_labelled_and_not_preferred(client: LanguageClient, tmp_path):
    uri = (tmp_path / "loop.py").as_uri()
    diagnostics = await open_document(client, uri, BUG)
    [clip] = [d for d in diagnostics if d.code == "AMP201"]
    assert clip.severity == lsp.DiagnosticSeverity.Error and clip.related_information  # the evidence
    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), range=clip.range,
        context=lsp.CodeActionContext(diagnostics=[clip]),
    ))
    [quick] = [a for a in actions if "AMP201" in a.title]
    assert "unsafe" in quick.title and not quick.is_preferred
    assert "scaler.unscale_(optimizer)" in apply(BUG, quick.edit.changes[uri])


async def test_hover_shows_the_rule_document(client: LanguageClient, tmp_path):
    uri = (tmp_path / "train.py").as_uri()
    [diagnostic] = await open_document(client, uri, OLD)
    result = await client.text_document_hover_async(
        lsp.HoverParams(text_document=lsp.TextDocumentIdentifier(uri=uri), position=diagnostic.range.start)
    )
    assert result.contents.kind == lsp.MarkupKind.Markdown
    assert result.contents.value.startswith("# deprecated-grad-scaler (AMP102)")
