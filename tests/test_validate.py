"""Fix validation (ampfix/validate.py): a fix whose result is worse than the original is never
offered, and the one decision shows everywhere (check's [*], counts, JSON, --apply)."""

import json
import textwrap

from conftest import run_ampfix

import ampfix
from ampfix.diagnostics import Applicability, Diagnostic, Edit, Fix, Position
from ampfix.engine import _analyse
from ampfix.settings import Settings
from ampfix.validate import FixValidator, leaves_names_alone

OLD = "import torch\nscaler = torch.cuda.amp.GradScaler()\n"

LOOP = textwrap.dedent("""\
    import torch
    scaler = torch.amp.GradScaler("cuda")
    for x in loader:
        with torch.autocast("cuda"):
            loss = model(x).mean()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""")


def finding(code: str, row: int) -> Diagnostic:
    diag = Diagnostic(code, "name", "message", 0, 0)
    diag.location = Position(row, 1)
    return diag


def marker_analysis(text: str, codes: frozenset) -> list:
    """A fake analysis: one AMP206 finding on every line that says `BAD`."""
    return [finding("AMP206", row) for row, line in enumerate(text.splitlines(), 1) if "BAD" in line]


def validator(text: str) -> FixValidator:
    return FixValidator(text, "t.py", frozenset({"AMP206"}), marker_analysis)


def test_findings_are_compared_by_location_not_by_count():
    original = "a = 1\nb = 2\nc = 3\nd = 4  # BAD\n"
    # one finding gone and another created elsewhere: the counts agree, the locations do not
    assert "new finding (AMP206)" in validator(original).problem("a = 1  # BAD\nb = 2\nc = 3\nd = 4\n")
    # lines inserted above move the old finding down: that is the same finding
    assert validator(original).problem("import torch\n\na = 1\nb = 2\nc = 3\nd = 4  # BAD\n") is None


def test_a_statement_a_fix_moves_keeps_its_findings():
    original = "for x in y:\n    clip()  # BAD\n    if step:\n        go()\n"
    moved = "for x in y:\n    if step:\n        clip()  # BAD\n        go()\n"
    assert validator(original).problem(moved) is None


def test_a_name_the_fix_uses_must_be_defined_where_it_runs():
    original = "def helper(x):\n    device = x.device\n    return device\n\ndef main(model):\n    model.to('cuda')\n"
    moved = "def helper(x):\n    device = x.device\n    return device\n\ndef main(model):\n    model.to(device)\n"
    problem = validator(original).problem(moved)
    assert problem == "its result would use `device` where no such name is defined"
    # a free variable the original already uses (a snippet's `loader`) is not the fix's doing
    snippet = "for x in loader:\n    f(x)\n"
    assert validator(snippet).problem("for x in loader:\n    f(x)\n    f(loader)\n") is None


def test_a_fix_that_breaks_the_scaler_protocol_is_worse_whatever_is_selected():
    def analyse(text, codes):
        return _analyse(text, "t.py", Settings(), codes)

    check = FixValidator(LOOP, "t.py", frozenset({"AMP102"}), analyse)  # only a migration selected
    twice = LOOP + "    scaler.update()\n"
    assert "new finding (AMP204" in check.problem(twice)


def test_the_original_is_analysed_only_for_the_bug_rules_not_already_asked():
    asked = []

    def analyse(text, codes):
        asked.append((text, codes))
        return _analyse(text, "t.py", Settings(), codes)

    selected = frozenset({"AMP102", "AMP204"})
    known = _analyse(LOOP, "t.py", Settings(), selected)
    check = FixValidator(LOOP, "t.py", selected, analyse, known)
    assert "new finding (AMP204" in check.problem(LOOP + "    scaler.update()\n")
    original = [codes for text, codes in asked if text == LOOP]
    assert len(original) == 1 and not original[0] & selected  # AMP204's findings were known already
    assert "AMP201" in original[0]  # an unselected bug rule is still asked of the original


TWO_RULES = "import torch\nscaler = torch.cuda.amp.GradScaler()\nwith torch.cuda.amp.autocast():\n    pass\n"


def test_the_fixes_of_several_rules_are_tried_together_first(monkeypatch):
    tried = []
    original = FixValidator.problem
    monkeypatch.setattr(FixValidator, "problem", lambda self, fixed, edits=None: tried.append(fixed) or original(self, fixed, edits))
    diagnostics = ampfix.check_source(TWO_RULES, "t.py", Settings())
    assert {d.code for d in diagnostics if d.fix} == {"AMP101", "AMP102"}
    assert len(tried) == 1  # what --apply writes, in one trial


def test_fixes_worse_together_are_tried_rule_by_rule(monkeypatch):
    tried = []

    def problem(self, fixed, edits=None):
        tried.append(fixed)
        return "worse" if "torch.cuda.amp" not in fixed else None  # each alone is fine

    monkeypatch.setattr(FixValidator, "problem", problem)
    diagnostics = ampfix.check_source(TWO_RULES, "t.py", Settings())
    assert {d.code for d in diagnostics if d.fix} == {"AMP101", "AMP102"}
    assert len(tried) == 3  # together, then each rule's alone


def test_a_refused_fix_is_not_offered_by_check_json_or_apply(monkeypatch, tmp_path):
    from ampfix.rules import RULES

    rule = RULES["AMP102"]
    original = rule.check

    def fix_with_a_foreign_name(ctx):
        for diag in original(ctx):
            edit = Edit(diag.start, diag.end, "make_scaler(device)")
            diag.fix = Fix("Use the factory", (edit,), Applicability.SAFE)
            yield diag

    monkeypatch.setattr(rule, "check", fix_with_a_foreign_name)
    [diag] = ampfix.check_source(OLD, "t.py", Settings(select=frozenset({"AMP102"})))
    assert diag.fix is None
    assert diag.fix_refused == (
        "Use the factory: not offered, its result would use `device`, `make_scaler` where no such name is defined"
    )
    result = ampfix.fix_source(OLD, "t.py", Settings(select=frozenset({"AMP102"})))
    assert result.source == OLD and not result.fixed


# AMP501's conversion adds a scaler that the checkpoint would lack (a new AMP206): refused when judged
REFUSED_CONVERSION = textwrap.dedent("""\
    import torch
    device = "cuda"
    model = Net().to(device)
    for epoch in range(3):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, "ckpt.pt")
""")


def test_the_summary_and_json_agree_with_what_apply_does(tmp_path):
    # the conversion's fix is refused in check (no [*], counted as refused), in JSON, and by --apply alike
    source = REFUSED_CONVERSION
    (tmp_path / "train.py").write_text(source)
    options = ("check", "--preview", "--select", "AMP501", "--no-cache", "--unsafe-fixes")
    text = run_ampfix(*options, "train.py", cwd=tmp_path).stdout
    [record] = json.loads(run_ampfix(*options, "--output-format", "json", "train.py", cwd=tmp_path).stdout)
    applied = run_ampfix(*options, "--apply", "train.py", cwd=tmp_path)
    assert "[*]" not in text and "Found 1 problem (1 fix refused)." in text
    assert "not offered, its result would have a new finding (AMP206)" in text
    assert record["fix"] is None and "new finding (AMP206)" in record["fix_refused"]
    assert applied.returncode == 1 and (tmp_path / "train.py").read_text() == source


def test_an_optimizer_made_by_a_call_is_not_repeated_by_a_fix():
    # `scaler.step(make_optimizer())`: an inserted `unscale_(make_optimizer())` would unscale another optimizer
    source = textwrap.dedent("""\
        import torch
        scaler = torch.amp.GradScaler("cuda")
        for x in loader:
            scaler.scale(model(x).mean()).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(make_optimizer())
            scaler.update()
    """)
    [diag] = ampfix.check_source(source, "t.py", Settings(select=frozenset({"AMP201"})))
    assert diag.fix is None


def test_no_plain_protocol_around_horovods_optimizer():
    # hvd.DistributedOptimizer needs synchronize() before unscale_ and skip_synchronize() around the step
    source = textwrap.dedent("""\
        import torch
        import horovod.torch as hvd
        optimizer = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1))
        scaler = torch.amp.GradScaler("cuda")
        for x in loader:
            with torch.autocast("cuda"):
                loss = model(x).mean()
            scaler.scale(loss).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
    """)
    [diag] = ampfix.check_source(source, "t.py", Settings(select=frozenset({"AMP201"})))
    assert diag.fix is None


def test_no_float16_conversion_of_a_complex_or_fft_model():
    source = textwrap.dedent("""\
        import torch
        model = SpectralConv().cuda()
        optimizer = torch.optim.Adam(model.parameters())
        for x, y in loader:
            x_hat = torch.fft.rfft(x.cuda())
            loss = (model(x_hat) - y.cuda()).abs().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    """)
    [diag] = ampfix.check_source(source, "t.py", Settings(select=frozenset({"AMP501"})))
    assert diag.fix is None and "complex tensors or FFTs (`torch.fft.rfft`)" in diag.no_fix_reason


def test_no_grad_scaler_conversion_under_opacus():
    source = textwrap.dedent("""\
        import torch
        from opacus import PrivacyEngine
        model = Net().cuda()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        model, optimizer, loader = PrivacyEngine().make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0)
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x.cuda()), y.cuda())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    """)
    [diag] = ampfix.check_source(source, "t.py", Settings(select=frozenset({"AMP501"})))
    assert diag.fix is None and diag.no_fix_reason.startswith("Opacus clips per-sample gradients")


def _tiles(opcodes, before, after):
    """The opcodes cover both texts in order, and their equal runs are equal lines."""
    a = b = 0
    for tag, a1, a2, b1, b2 in opcodes:
        assert (a1, b1) == (a, b)
        if tag == "equal":
            assert before[a1:a2] == after[b1:b2]
        a, b = a2, b2
    return (a, b) == (len(before), len(after))


def test_the_line_diff_of_long_texts_is_anchored_and_still_a_diff():
    import difflib
    import random

    from ampfix import validate

    rng = random.Random(7)
    function = ["def train(model):", "    scaler = make()", "    loss = model()", "    scaler.step()", ""]
    before = [line.replace("train", f"train_{n}") if "def" in line else line for n in range(1000) for line in function]
    after = list(before)
    for _ in range(30):  # fixes here and there: inserted, deleted and rewritten lines
        row = rng.randrange(len(after))
        after[row:row + 1] = rng.choice([[after[row], "    scaler.update()"], [], ["    loss = model().float()"]])
    opcodes = validate.line_opcodes(before, after)
    assert len(before) + len(after) > validate._PLAIN_DIFF_LINES and _tiles(opcodes, before, after)
    changed = sum(max(a2 - a1, b2 - b1) for tag, a1, a2, b1, b2 in opcodes if tag != "equal")
    assert changed <= 60  # the edits, not the repeated lines around them
    # below the threshold it is difflib's own diff
    small_before, small_after = before[:400], after[:380]
    expected = difflib.SequenceMatcher(None, small_before, small_after, autojunk=False).get_opcodes()
    assert validate.line_opcodes(small_before, small_after) == [tuple(op) for op in expected]


# -- when pyflakes need not be asked: an edit that respells within a line, reading no new name ----


def _replacing(text: str, old: str, new: str) -> Edit:
    start = text.index(old)
    return Edit(start, start + len(old), new)


def _leaves_alone(text: str, *replacements: tuple) -> bool:
    return leaves_names_alone(text, [_replacing(text, old, new) for old, new in replacements])


AUTOCAST = "with torch.cuda.amp.autocast(enabled=use_amp):\n    pass\n"


def test_a_respelling_that_reads_no_new_name_leaves_names_alone():
    assert _leaves_alone(AUTOCAST, ("torch.cuda.amp.autocast(", 'torch.autocast("cuda", '))
    assert _leaves_alone(OLD, ("torch.cuda.amp.GradScaler()", 'torch.amp.GradScaler("cuda")'))
    at = AUTOCAST.index("(") + 1
    assert leaves_names_alone(AUTOCAST, [_replacing(AUTOCAST, "torch.cuda.amp.autocast", "torch.autocast"), Edit.insert(at, '"cuda", ')])


def test_a_name_that_was_only_an_attribute_or_a_string_is_a_new_read():
    assert not _leaves_alone(OLD, ("torch.cuda.amp.GradScaler", "amp.GradScaler"))  # `amp` now read as a name
    assert not _leaves_alone('f("device")\n', ('"device"', "device"))
    assert not _leaves_alone("x = amp.autocast()\n", ("amp.autocast", "torch.autocast"))  # `torch` is new here


def test_binding_or_unbinding_is_left_to_pyflakes():
    assert not _leaves_alone("import amp\namp.x\n", ("import amp", ""))  # the import goes: `amp` unbound
    assert not _leaves_alone("f(a)\n", ("f(a)", "a = f(a)"))  # a new local shadows a global read before it
    assert not _leaves_alone("g(lambda: 1)\n", ("lambda: 1", "1"))
    assert not _leaves_alone(AUTOCAST, ("enabled=use_amp", "enabled=x"))  # keyword `=`: not followed


def test_edits_over_lines_touching_or_joining_words_are_left_to_pyflakes():
    assert not _leaves_alone("f(a,\n  b)\n", ("a,\n  b", "b"))
    assert not _leaves_alone("torch_amp(x)\n", ("amp", ""))  # the span starts inside a word: `torch_` would be new
    assert not _leaves_alone("a.b\n", (".", ""))  # `ab` would be new
    assert not _leaves_alone("x.y # c\n", (".y # c", ".y"))  # a comment
    text = "f(a)(b)\n"
    assert not leaves_names_alone(text, [Edit(2, 3, "b"), Edit(3, 4, ")")])  # touching edits


def test_a_fix_that_respells_into_an_undefined_name_is_still_refused(monkeypatch):
    from ampfix.rules import RULES

    rule = RULES["AMP102"]
    original = rule.check

    def into_a_bare_name(ctx):
        for diag in original(ctx):
            edit = diag.fix.edits[0]
            diag.fix = Fix(diag.fix.message, (Edit(edit.start, edit.end, "GradScaler"),), diag.fix.applicability)
            yield diag

    monkeypatch.setattr(rule, "check", into_a_bare_name)
    (diag,) = [d for d in ampfix.check_source(OLD, "t.py", Settings()) if d.code == "AMP102"]
    assert diag.fix is None and "GradScaler" in diag.fix_refused


def test_row_mapping_read_off_the_edits_is_a_line_diff_of_the_result():
    """The opcodes of ``edit_opcodes`` say which lines stayed: every equal run is equal, the
    runs cover both texts, and where the edits overlap (or the rows would not add up) it leaves
    the mapping to the diff."""
    import random

    from ampfix.diagnostics import Edit
    from ampfix.validate import edit_opcodes

    text = "".join(f"line {i}\n" for i in range(30))
    contents = ["", "X", "new\n", "    with ctx():\n        body()\n", "q\nr", "\n"]
    generator = random.Random(3)
    decided = 0
    for _ in range(500):
        edits, position = [], 0
        for _ in range(generator.randint(1, 3)):
            start = generator.randint(position, len(text))
            end = generator.randint(start, min(len(text), start + generator.choice([0, 3, 10, 40])))
            edits.append(Edit(start, end, generator.choice(contents)))
            position = end
        fixed = text
        for edit in reversed(edits):
            fixed = fixed[:edit.start] + edit.content + fixed[edit.end:]
        before, after = text.splitlines(), fixed.splitlines()
        opcodes = edit_opcodes(text, edits, len(after))
        if opcodes is None:
            continue
        decided += 1
        assert opcodes[0][1] == opcodes[0][3] == 0 and opcodes[-1][2] == len(before) and opcodes[-1][4] == len(after)
        for (tag, a1, a2, b1, b2), following in zip(opcodes, opcodes[1:] + [None]):
            if tag == "equal":
                assert before[a1:a2] == after[b1:b2]
            if following is not None:
                assert (following[1], following[3]) == (a2, b2)  # contiguous in both texts
    assert decided > 400
    assert edit_opcodes(text, [Edit(0, 10, "a"), Edit(5, 12, "b")], 30) is None  # overlapping
