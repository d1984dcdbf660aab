"""The byte prefilter: sound (it never hides a finding), and it keeps files that cannot fire unparsed."""

import glob
import os
import re
import textwrap

import pytest

import ampfix
from ampfix.rules import prefilter_for
from ampfix import engine
from ampfix.engine import may_fire
from ampfix.settings import Settings

SETTINGS = Settings()
CODES = frozenset(SETTINGS.select)


def findings(source: str, prefilter: bool = True) -> list:
    return [(d.code, d.start) for d in ampfix.check_source(source, "t.py", SETTINGS, prefilter=prefilter)]


def test_the_prefilter_is_sound_on_every_fixture_and_rule_example():
    """Every rule run without the prefilter finds nothing the prefiltered run misses."""
    from conftest import FIXTURES, RULE_DOCS

    sources = [open(p, encoding="utf-8").read() for p in glob.glob(os.path.join(FIXTURES, "*.py"))]
    for doc in glob.glob(os.path.join(RULE_DOCS, "*.md")):
        sources += re.findall(r"```python\n(.*?)```", open(doc, encoding="utf-8").read(), re.S)
    for source in sources:
        assert findings(source) == findings(source, prefilter=False)


STEP = """
import torch


def train(model, optimizer, loader):
    for x in loader:
        loss = model(x.cuda())
        {backward}
        optimizer.step()
"""

STATIC_SCALE = """
LOSS_SCALE = 1024.0


def train(model, optimizer, loader):
    for x in loader:
        (model(x) * LOSS_SCALE).backward()
        for p in model.parameters():
            p.grad /= LOSS_SCALE
        optimizer.step()
"""


@pytest.mark.parametrize(
    "code, source",
    [
        # whitespace before the parenthesis is still a call
        ("AMP501", STEP.format(backward="loss.backward ()")),
        # torch.autograd.backward under its own name: no `.backward(` anywhere
        ("AMP501", "from torch.autograd import backward\n" + STEP.format(backward="backward(loss)")),
        ("AMP501", "from torch.autograd import backward as run\n" + STEP.format(backward="run(loss)")),
        # the deprecated module under other names
        ("AMP101", "from torch.cuda import amp\n\nwith amp.autocast():\n    pass\n"),
        ("AMP102", "import torch.cuda.amp as mixed\n\nscaler = mixed.GradScaler()\n"),
        ("AMP102", "from torch.cuda.amp import (\n    GradScaler,\n)\n\nscaler = GradScaler()\n"),
        # a static loss scale named in capitals
        ("AMP502", STATIC_SCALE),
        # a scaler named in capitals
        ("AMP204", "def step(self):\n    self.SCALER.scale(self.loss).backward()\n    self.SCALER.step(self.opt)\n"),
    ],
)
def test_unusual_spellings_pass_the_prefilter(code, source):
    source = textwrap.dedent(source)
    found = findings(source)
    assert code in [c for c, _ in found]
    assert found == findings(source, prefilter=False)


MODEL_FILE = """
import torch


class Rotary(torch.nn.Module):
    def forward(self, x):
        with torch.autocast(x.device.type, enabled=False):
            return x.float().clamp(0, 1)
"""
PIPELINE_FILE = """
from peft import unscale_lora_layers


def denoise(self, latents):
    unscale_lora_layers(self.text_encoder)
    return self.scheduler.step(latents)
"""
CONSTANTS_FILE = "TIMESTAMP = 0\nCLAMP_MAX = 1.0\nEXAMPLE = 'scaler'\n"


@pytest.mark.parametrize("source", [MODEL_FILE, PIPELINE_FILE, CONSTANTS_FILE])
def test_files_no_rule_can_fire_on_are_never_parsed(source, monkeypatch):
    def parse_forbidden(*args, **kwargs):
        raise AssertionError("parsed a file the prefilter should have rejected")

    monkeypatch.setattr(engine, "parse_quietly", parse_forbidden)
    assert not may_fire(source.encode(), CODES)
    assert ampfix.check_source(source, "t.py", SETTINGS) == []


def test_only_the_rules_that_may_fire_run():
    deprecated_only = b"import torch\n\nwith torch.cuda.amp.autocast():\n    y = model(x)\n"
    assert prefilter_for(CODES).candidates(deprecated_only) == {"AMP101"}
    training = b"with torch.autocast('cuda'):\n    loss = model(x)\nloss.backward()\noptimizer.step()\n"
    assert {"AMP208", "AMP401", "AMP501"} <= prefilter_for(CODES).candidates(training)


def test_selection_narrows_the_prefilter():
    source = b"from torch.cuda.amp import GradScaler\n"
    assert may_fire(source, CODES)
    assert not may_fire(source, frozenset({"AMP101"}))
