"""The byte prefilter: which selected rules could fire on a file, decided from its raw bytes.

Most files of a repository never mention AMP, and parsing is by far the largest cost of a check,
so a file is parsed only when some selected rule *could* fire on it. Two stages:

1. every rule declares rare ``triggers``, one of which must occur in any file it fires on; the
   distinct tokens of the selected rules are searched with C-speed substring search, and a file
   that contains none of them (nearly all files) is done;
2. for each token that occurs, the rules that declared it evaluate their own necessary condition
   (``Rule.may_fire``) on a ``FileBytes``, which answers each question about the bytes once per
   file. Only the rules whose condition holds run on the parsed file.

A condition may only say "cannot fire" when the rule truly cannot: tests compare runs with and
without the prefilter on the fixtures, the rule examples and the labelled corpus files.
Spellings are matched as Python allows them where that is cheap (``loss.backward ()``,
``from torch.autograd import backward``); a dot is assumed to touch the name after it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from typing import Protocol

    class Prefiltered(Protocol):
        """What the prefilter needs of a rule (ampfix.rules.base.Rule is one): typed here so the
        rules import the prefilter and not the other way round."""

        code: str
        triggers: tuple[bytes, ...]

        def may_fire(self, file: "FileBytes") -> bool: ...

_AMP_WORD_END = re.compile(rb"amp\b")
_SCALER_STEP = re.compile(rb"(?i)scaler\s*\.\s*step\s*\(")
_SCALER_STEP_OR_UPDATE = re.compile(rb"(?i)scaler\s*\.\s*(?:step|update)\s*\(")


class FileBytes:
    """One file's bytes, and the memoized answers to the prefilter's questions about them."""

    __slots__ = ("data", "_answers")

    def __init__(self, data: bytes):
        self.data = data
        self._answers: dict = {}

    def has(self, *tokens: bytes) -> bool:
        """Whether any of ``tokens`` occurs (``answer`` inlined: the most frequent question)."""
        for token in tokens:
            found = self._answers.get(token)
            if found is None:
                found = self._answers[token] = token in self.data
            if found:
                return True
        return False

    def matches(self, pattern: re.Pattern) -> bool:
        return self.answer(pattern, lambda data: pattern.search(data) is not None)

    def answer(self, question, compute: Callable[[bytes], bool]) -> bool:
        """``compute(data)``, computed once per file for each ``question``."""
        found = self._answers.get(question)
        if found is None:
            found = self._answers[question] = compute(self.data)
        return found

    def calls(self, method: str) -> bool:
        """Whether ``.method(`` occurs, whitespace allowed before the parenthesis."""
        if not self.has(method.encode()):
            return False
        return self.matches(_method_call(method))


_METHOD_CALLS: dict[str, re.Pattern] = {}


def _method_call(method: str) -> re.Pattern:
    pattern = _METHOD_CALLS.get(method)
    if pattern is None:
        pattern = _METHOD_CALLS[method] = re.compile(rb"\.\s*" + re.escape(method.encode()) + rb"\s*\(")
    return pattern


# The necessary conditions rules share. Each mirrors how the training-loop model recognises the
# thing (ampfix/training/model.py); change them together.


def may_backward(file: FileBytes) -> bool:
    """A backward event: ``x.backward(...)`` in any form, or ``torch.autograd.backward`` imported
    under its own name (a bare ``backward(loss)`` needs ``autograd`` in an import)."""
    return file.calls("backward") or (file.has(b"autograd") and file.has(b"backward"))


def may_step(file: FileBytes) -> bool:
    """An optimizer or scaler step."""
    return file.calls("step")


def may_train_step(file: FileBytes) -> bool:
    """A backward pass and a step: what every training-step rule needs."""
    return may_backward(file) and may_step(file)


def may_use_scaler(file: FileBytes) -> bool:
    """Something the model takes for a GradScaler: a ``GradScaler(...)`` assignment, a name
    ending in ``scaler`` (any case), or a receiver of ``.unscale_()``."""
    return file.has(b"caler", b"CALER") or file.calls("unscale_")


def may_step_scaler(file: FileBytes) -> bool:
    """``scaler.step(optimizer)``: a step on something the model takes for a scaler."""
    if not may_step(file):
        return False
    if file.has(b"GradScaler") or file.calls("unscale_"):
        return True
    return file.has(b"caler", b"CALER") and file.matches(_SCALER_STEP)


def may_scale_loss(file: FileBytes) -> bool:
    """``scaler.scale(loss)``."""
    return file.calls("scale") and may_use_scaler(file)


def may_backward_scaled(file: FileBytes) -> bool:
    """``scaler.scale(loss).backward()``."""
    return file.calls("backward") and may_scale_loss(file)


def may_call_scaler(file: FileBytes) -> bool:
    """A scaler in use: created, stepping, unscaling, updating or scaling a loss."""
    if file.has(b"GradScaler") or file.calls("unscale_") or may_scale_loss(file):
        return True
    return file.has(b"caler", b"CALER") and file.matches(_SCALER_STEP_OR_UPDATE)


def names_amp_module(file: FileBytes) -> bool:
    """``torch.cuda.amp``/``torch.cpu.amp`` in any spelling names the module ``amp`` as a word
    (``torch.cuda.amp.autocast``, ``from torch.cuda import amp``, ``from torch.cuda.amp import``)."""
    return file.answer(_AMP_WORD_END, _names_amp_word)


def _names_amp_word(data: bytes) -> bool:
    for match in _AMP_WORD_END.finditer(data):  # "amp" ending a word; "clamp", "example" don't count
        before = data[match.start() - 1 : match.start()]
        if not before or not (before.isalnum() or before == b"_"):
            return True
    return False


class Prefilter:
    """The two-stage prefilter for one set of selected rules."""

    def __init__(self, rules: list["Prefiltered"]):
        rules = [rule for rule in rules if rule.triggers]
        tokens = sorted({t for rule in rules for t in rule.triggers}, key=len)
        kept: list[bytes] = []
        for token in tokens:
            if not any(shorter in token for shorter in kept):  # "autocast" covers "_autocast_"
                kept.append(token)
        # each token, with the rules one of whose triggers contains it
        self.plan = tuple(
            (token, tuple(rule for rule in rules if any(token in t for t in rule.triggers))) for token in kept
        )

    def any_may_fire(self, data: bytes) -> bool:
        return bool(self._candidates(FileBytes(data), first_only=True))

    def candidates(self, data: bytes) -> frozenset[str]:
        """The codes of the rules that may fire on a file with these bytes."""
        return frozenset(self._candidates(FileBytes(data), first_only=False))

    def _candidates(self, file: FileBytes, first_only: bool) -> set[str]:
        decided: dict[str, bool] = {}
        for token, rules in self.plan:
            if not file.has(token):
                continue
            for rule in rules:
                if rule.code not in decided:
                    decided[rule.code] = rule.may_fire(file)
                    if first_only and decided[rule.code]:
                        return {rule.code}
        return {code for code, fires in decided.items() if fires}
