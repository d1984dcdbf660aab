"""`ampfix server` as ruff's server behaves (issue 24), through a real LSP client (pytest-lsp):
configuration reloaded when a configuration file changes on disk, "disable for this line",
the rule's document linked from each diagnostic, a single quick fix that leaves no unused import."""

import ast
import asyncio
import sys

import pytest

pytest_lsp = pytest.importorskip("pytest_lsp")
from lsprotocol import types as lsp  # noqa: E402
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities  # noqa: E402

from test_server import answer_registrations, apply, edit_of, open_document  # noqa: E402

OLD = "import torch\n\nscaler = torch.cuda.amp.GradScaler()\nwith torch.cuda.amp.autocast():\n    pass\n"


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[sys.executable, "-m", "ampfix", "server"]))
async def client(lsp_client: LanguageClient, tmp_path):
    answer_registrations(lsp_client)
    await lsp_client.initialize_session(
        lsp.InitializeParams(capabilities=client_capabilities("visual-studio-code"), root_uri=tmp_path.as_uri())
    )
    yield
    await lsp_client.shutdown_session()


async def quick_fixes(client: LanguageClient, uri: str, diagnostic: lsp.Diagnostic) -> list[lsp.CodeAction]:
    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), range=diagnostic.range,
        context=lsp.CodeActionContext(diagnostics=[diagnostic]),
    ))
    return [a for a in actions if a.kind == lsp.CodeActionKind.QuickFix]


async def test_editing_the_configuration_file_republishes_diagnostics(client: LanguageClient, tmp_path):
    # the server asks the editor to watch the configuration files (VS Code registers dynamically)
    for _ in range(100):
        if client.registrations:
            break
        await asyncio.sleep(0.05)
    [watch] = [r for r in client.registrations if r.method == lsp.WORKSPACE_DID_CHANGE_WATCHED_FILES]
    patterns = {w["globPattern"] for w in watch.register_options["watchers"]}  # as the wire carries them
    assert {"**/pyproject.toml", "**/.ampfix.toml", "**/ampfix.toml"} <= patterns
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.ampfix]\nselect = ["ALL"]\n')
    uri = (tmp_path / "train.py").as_uri()
    found = await open_document(client, uri, OLD)
    assert {d.code for d in found} == {"AMP101", "AMP102"}
    pyproject.write_text('[tool.ampfix]\nignore = ["AMP102"]\n')  # edited while the file is open
    client.workspace_did_change_watched_files(lsp.DidChangeWatchedFilesParams(
        changes=[lsp.FileEvent(uri=pyproject.as_uri(), type=lsp.FileChangeType.Changed)]))
    await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    assert {d.code for d in client.diagnostics[uri]} == {"AMP101"}
    pyproject.unlink()
    client.workspace_did_change_watched_files(lsp.DidChangeWatchedFilesParams(
        changes=[lsp.FileEvent(uri=pyproject.as_uri(), type=lsp.FileChangeType.Deleted)]))
    await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    assert {d.code for d in client.diagnostics[uri]} == {"AMP101", "AMP102"}


async def test_disable_for_this_line_adds_a_noqa_comment(client: LanguageClient, tmp_path):
    uri = (tmp_path / "train.py").as_uri()
    text = OLD.replace("GradScaler()\n", "GradScaler()  # noqa: E501\n")
    found = await open_document(client, uri, text)
    [scaler] = [d for d in found if d.code == "AMP102"]
    [disable] = [a for a in await quick_fixes(client, uri, scaler) if a.title == "ampfix (AMP102): Disable for this line"]
    disabled = apply(text, (await edit_of(client, disable)).changes[uri])
    assert disabled.splitlines()[2] == "scaler = torch.cuda.amp.GradScaler()  # noqa: E501, AMP102"  # merged into it
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[lsp.TextDocumentContentChangeWholeDocument(text=disabled)],
    ))
    await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    assert {d.code for d in client.diagnostics[uri]} == {"AMP101"}


async def test_diagnostics_link_to_the_rules_document(client: LanguageClient, tmp_path):
    uri = (tmp_path / "train.py").as_uri()
    found = await open_document(client, uri, OLD)
    for diagnostic in found:
        href = diagnostic.code_description.href
        assert href.startswith("file://") and href.endswith(f"/{diagnostic.code}.md")


async def test_a_single_quick_fix_leaves_no_unused_import(client: LanguageClient, tmp_path):
    uri = (tmp_path / "train.py").as_uri()
    text = "from torch.cuda.amp import GradScaler, autocast  # old API\n\nscaler = GradScaler()\nwith autocast():\n    pass\n"
    found = await open_document(client, uri, text)
    [scaler] = [d for d in found if d.code == "AMP102"]
    [fix] = [a for a in await quick_fixes(client, uri, scaler) if a.is_preferred]
    fixed = apply(text, (await edit_of(client, fix)).changes[uri])
    assert fixed == ("from torch.cuda.amp import autocast  # old API\nimport torch\n\n"
                     'scaler = torch.amp.GradScaler("cuda")\nwith autocast():\n    pass\n')
    ast.parse(fixed)


async def test_disable_for_this_line_in_a_notebook_cell(client: LanguageClient, tmp_path):
    from test_server import NOTEBOOK_CELLS, open_notebook

    uris = await open_notebook(client, tmp_path)
    [diagnostic] = client.diagnostics[uris[2]]
    [disable] = [a for a in await quick_fixes(client, uris[2], diagnostic) if "Disable for this line" in a.title]
    disable_edit = await edit_of(client, disable)
    assert set(disable_edit.changes) == {uris[2]}
    assert apply(NOTEBOOK_CELLS[2][1], disable_edit.changes[uris[2]]) == (
        "%matplotlib inline\nscaler = torch.cuda.amp.GradScaler()  # noqa: AMP102\n")
