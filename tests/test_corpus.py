"""The labelled dev corpus (../shared/corpus/dev-labels.json): the prefilter lets every labelled
site through, and every labelled file gets the same diagnostics with and without it.

The corpus is real third-party code and is not part of this repository: build the checkouts
with `python bench/corpus_eval.py --checkouts DIR --extract-from MIRRORS` and point
AMPFIX_CORPUS at DIR (AMPFIX_LABELS at the labels file if it is not beside the project).
Without them the tests are skipped; bench/corpus_eval.py reports the same figures and more.
"""

import json
import os

import pytest

import ampfix
from ampfix.engine import may_fire
from ampfix.settings import Settings
from ampfix.source import read_source
from conftest import ROOT

LABELS = os.environ.get("AMPFIX_LABELS", os.path.join(ROOT, "..", "shared", "corpus", "dev-labels.json"))
CHECKOUTS = os.environ.get("AMPFIX_CORPUS", "")

pytestmark = pytest.mark.skipif(
    not (os.path.isdir(CHECKOUTS) and os.path.isfile(LABELS)),
    reason="set AMPFIX_CORPUS to the dev-corpus checkouts (bench/corpus_eval.py --extract-from builds them)",
)


def _labels() -> list[dict]:
    with open(LABELS, encoding="utf-8") as handle:
        return json.load(handle)["labels"]


def _text(label: dict) -> str:
    checkout = os.path.join(CHECKOUTS, f"{label['repo'].replace('/', '+')}@{label['commit'][:10]}")
    return read_source(os.path.join(checkout, label["path"])).text


def test_every_labelled_site_passes_the_prefilter_for_its_rule():
    missed = []
    for label in _labels():
        if label["code"].startswith("!"):
            continue
        if not may_fire(_text(label).encode("utf-8", "surrogatepass"), frozenset({label["code"]})):
            missed.append((label["repo"], label["path"], label["line"], label["code"]))
    assert missed == []


def test_every_labelled_file_gets_the_same_diagnostics_without_the_prefilter():
    settings = Settings()
    files = {(label["repo"], label["commit"], label["path"]): label for label in _labels()}
    differ = []
    for key, label in sorted(files.items()):
        text = _text(label)
        with_prefilter = [(d.code, d.start) for d in ampfix.check_source(text, label["path"], settings)]
        without = [(d.code, d.start) for d in ampfix.check_source(text, label["path"], settings, prefilter=False)]
        if with_prefilter != without:
            differ.append(key)
    assert differ == []
