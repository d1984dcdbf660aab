"""`ampfix server` keeps up with typing: a burst of edits is analysed and published once, for its
last version; code actions and hover answer from the analysis of the version, never analysing
again; fix-all's edit comes on `codeAction/resolve`."""

import asyncio
import sys

import pytest

pytest_lsp = pytest.importorskip("pytest_lsp")
from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from test_validate import REFUSED_CONVERSION

HEADER = "import torch\n\nscaler = torch.cuda.amp.GradScaler()\n"
# enough code that an analysis takes a while: edits sent together arrive before it ends
FILLER = "".join(f"\n\ndef helper_{i}(values):\n    return [v * {i} for v in values]\n" for i in range(150))


class Recording(dict):
    """The client's diagnostics by uri, recording each publication as (uri, version): version v of
    the document has v + 1 findings (text_of), so the count tells which version was published."""

    def __init__(self, published: list):
        super().__init__()
        self.published = published

    def __setitem__(self, uri, diagnostics):
        self.published.append((uri, len(diagnostics) - 1))
        super().__setitem__(uri, diagnostics)


def text_of(version: int) -> str:
    """A version of the document with ``version`` more deprecated calls (one finding each)."""
    return HEADER + "".join(f"s{i} = torch.cuda.amp.GradScaler()\n" for i in range(version)) + FILLER


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[sys.executable, "-m", "ampfix", "server"]))
async def client(lsp_client: LanguageClient, tmp_path):
    @lsp_client.feature(lsp.CLIENT_REGISTER_CAPABILITY)
    def register(params: lsp.RegistrationParams):
        return None

    await lsp_client.initialize_session(
        lsp.InitializeParams(capabilities=client_capabilities("visual-studio-code"), root_uri=tmp_path.as_uri())
    )
    lsp_client.published = []
    lsp_client.diagnostics = Recording(lsp_client.published)
    yield
    await lsp_client.shutdown_session()


async def published_version(client: LanguageClient, uri: str, version: int) -> None:
    for _ in range(600):
        if (uri, version) in client.published:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"version {version} was never published: {client.published}")


def analyses(client: LanguageClient, uri: str) -> list[str]:
    return [m.message for m in client.log_messages if m.message.startswith(f"ampfix: analysed {uri} ")]


def change(client: LanguageClient, uri: str, version: int) -> None:
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[lsp.TextDocumentContentChangeWholeDocument(text=text_of(version))],
    ))


async def open_document(client: LanguageClient, uri: str) -> None:
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        text_document=lsp.TextDocumentItem(uri=uri, language_id="python", version=1, text=text_of(1))))
    await published_version(client, uri, 1)


async def test_a_burst_of_edits_publishes_only_the_last_version(client: LanguageClient, tmp_path):
    uri = (tmp_path / "train.py").as_uri()
    await open_document(client, uri)
    for version in range(2, 12):
        change(client, uri, version)
    await published_version(client, uri, 11)
    await asyncio.sleep(0.3)  # nothing older comes after it either
    versions = [v for u, v in client.published if u == uri]
    # the burst's first edit is a lone one (no debounce): published too when its analysis ends
    # before the next edits are read, which the scheduling of a loaded machine decides
    assert versions in ([1, 11], [1, 2, 11])
    assert len(analyses(client, uri)) <= 3  # the open, the last edit, at most one overtaken


async def test_code_actions_and_hover_on_an_unchanged_version_do_not_analyse_again(client: LanguageClient, tmp_path):
    uri = (tmp_path / "train.py").as_uri()
    await open_document(client, uri)
    await asyncio.sleep(0.2)  # the log message of the analysis comes just after the publication
    assert len(analyses(client, uri)) == 1
    diagnostics = client.diagnostics[uri]
    for line in [2, 3, 4, 10, 20, 2]:  # cursor moves: at findings and on clean lines
        where = lsp.Range(start=lsp.Position(line=line, character=12), end=lsp.Position(line=line, character=12))
        actions = await client.text_document_code_action_async(lsp.CodeActionParams(
            text_document=lsp.TextDocumentIdentifier(uri=uri), range=where,
            context=lsp.CodeActionContext(diagnostics=list(diagnostics)),
        ))
        fix_all = [a for a in actions if a.kind == "source.fixAll.ampfix"]
        assert len(fix_all) == 1 and fix_all[0].edit is None  # offered; its edit on resolve
        quick = [a for a in actions if a.kind == lsp.CodeActionKind.QuickFix]
        assert bool(quick) == (line in (2, 3))
    await client.text_document_hover_async(lsp.HoverParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), position=diagnostics[0].range.start))
    resolved = await client.code_action_resolve_async(fix_all[0])
    assert "torch.cuda.amp" not in resolved.edit.changes[uri][0].new_text
    await asyncio.sleep(0.2)
    assert len(analyses(client, uri)) == 1


async def test_a_code_action_right_after_an_edit_answers_for_the_new_version(client: LanguageClient, tmp_path):
    uri = (tmp_path / "train.py").as_uri()
    await open_document(client, uri)
    change(client, uri, 2)  # the debounce has not run out when the request comes: it waits for v2
    where = lsp.Range(start=lsp.Position(line=4, character=12), end=lsp.Position(line=4, character=12))
    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), range=where, context=lsp.CodeActionContext(diagnostics=[])))
    assert any(a.kind == lsp.CodeActionKind.QuickFix and "AMP102" in a.title for a in actions)  # s1 exists in v2 only


async def test_a_code_action_while_the_fixes_are_judged_waits_for_that_analysis(client: LanguageClient, tmp_path):
    # the diagnostics come before the fixes are validated: a request then must not analyse the
    # same version a second time (that publication would come after the next edit's request)
    uri = (tmp_path / "train.py").as_uri()
    await open_document(client, uri)
    where = lsp.Range(start=lsp.Position(line=2, character=12), end=lsp.Position(line=2, character=12))
    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), range=where, context=lsp.CodeActionContext(diagnostics=[])))
    assert any(a.kind == lsp.CodeActionKind.QuickFix and "AMP102" in a.title for a in actions)
    await asyncio.sleep(0.3)
    assert len(analyses(client, uri)) == 1 and [v for u, v in client.published if u == uri] == [1]


REFUSED = REFUSED_CONVERSION + FILLER * 6  # judging its fix takes a while: the request below comes before the judgement


async def test_a_fix_offered_before_it_is_judged_resolves_to_the_judgement(client: LanguageClient, tmp_path):
    # the actions are offered as soon as the findings are published; a fix whose edit was not
    # ready comes without it, and resolve gives the judged edit: none for a refused fix, and why
    (tmp_path / "pyproject.toml").write_text('[tool.ampfix]\npreview = true\nextend-select = ["AMP501"]\n')
    uri = (tmp_path / "train.py").as_uri()
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        text_document=lsp.TextDocumentItem(uri=uri, language_id="python", version=1, text=REFUSED)))
    await published_version(client, uri, 0)  # one finding: AMP501
    [finding] = client.diagnostics[uri]
    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), range=finding.range,
        context=lsp.CodeActionContext(diagnostics=[finding])))
    offered = [a for a in actions if a.kind == lsp.CodeActionKind.QuickFix and "Disable" not in a.title]
    # offered before the judgement (the usual case), or not at all once it withdrew the fix
    for fix in offered:
        assert fix.edit is None and fix.data is not None
        resolved = await client.code_action_resolve_async(fix)
        assert resolved.edit is not None and not resolved.edit.changes
        await asyncio.sleep(0.1)
        assert any("new finding (AMP206)" in m.message for m in client.messages)
    [disable] = [a for a in actions if "Disable for this line" in a.title]
    edit = disable.edit or (await client.code_action_resolve_async(disable)).edit
    assert edit.changes[uri][0].new_text.endswith("# noqa: AMP501")
