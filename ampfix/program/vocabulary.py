"""The words a module's code uses, read from its syntax tree: never from comments or docstrings.

Some facts about a module are about what its code names rather than about one value: whether it
ever names an accelerator (``"cuda"``, ``.cuda()``, ``torch.cuda``), whether it has a precision
option (``args.fp16``, ``"--bf16"``, ``cfg["mixed_precision"]``), whether it imports ``gym``.
Those used to be regular expressions over the file's text, so a comment (``# TODO: try fp16
later``) or a sentence in a docstring flipped them. Here they come from the code alone:

- ``names``: identifiers read or bound, attribute names, keyword-argument names;
- ``strings``: the string constants that look like an option, a key or a device (``"--fp16"``,
  ``"mixed_precision"``, ``"cuda:0"``), without leading dashes; not prose: a log message or a
  docstring is not a setting. ``words``: their parts (``"use-fp16"`` has ``use`` and ``fp16``);
- ``calls``: the method names called (``.half()``, ``.cuda(rank)``);
- ``modules``: the modules imported (``torch.cuda.amp``, ``gym``), and the qualified ``torch.*``
  attribute chains the code reads (``torch.cuda``, ``torch.accelerator``).

Built once per module, on demand (one walk of the tree).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from ampfix.semantic import SemanticModel

# An option name, a dictionary key or a device string: no spaces, no sentence.
_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_SETTING_LIKE = re.compile(r"^-{0,2}[A-Za-z_][\w.:-]{0,63}$")


@dataclass(frozen=True)
class Vocabulary:
    names: frozenset
    strings: frozenset
    words: frozenset
    calls: frozenset
    modules: frozenset

    def mentions(self, *tokens: str) -> bool:
        """Whether the code names one of ``tokens``: as an identifier, an attribute, a keyword
        argument, or a word of a setting-like string (``"--use-fp16"`` has ``use``, ``fp16``)."""
        return any(token in self.names or token in self.strings or token in self.words for token in tokens)


def _docstring(node: ast.AST) -> Optional[ast.Constant]:
    """The docstring of a module, class or function (a string constant as its first statement)."""
    if isinstance(node, _DOCUMENTED) and node.body:
        first = node.body[0]
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            return first.value
    return None


def code_text(semantic: "SemanticModel", text: str) -> str:
    """``text`` with its comments and docstrings blanked (the same length and lines), for the
    questions still asked of a module's text, so that prose (``# TODO: add autocast``, a docstring
    saying autocast was taken out) answers none of them. Built once per module."""
    found = getattr(semantic, "_code_text", None)
    if found is None:
        found = semantic._code_text = _blank(text, _prose_spans(semantic.tree, text))
    return found


def _prose_spans(tree: ast.Module, text: str) -> list[tuple[int, int]]:
    """Character spans of the comments and docstrings, from one pass of the tokenizer (a
    docstring is the string token whose rows are those of a docstring node)."""
    import io
    import tokenize

    docstrings = {(doc.lineno, doc.end_lineno) for doc in map(_docstring, ast.walk(tree)) if doc is not None}
    starts = [0]
    for line in io.StringIO(text).readlines():  # the lines tokenize reads, by the same reader
        starts.append(starts[-1] + len(line))
    spans = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            prose = token.type == tokenize.COMMENT or (
                token.type == tokenize.STRING and (token.start[0], token.end[0]) in docstrings
            )
            if prose:  # tokenize's columns are characters
                spans.append((starts[token.start[0] - 1] + token.start[1], starts[token.end[0] - 1] + token.end[1]))
    except (tokenize.TokenError, SyntaxError):
        pass  # the tree parsed: what tokenize read up to here is blanked
    return sorted(spans)


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    pieces, at = [], 0
    for start, end in spans:
        if start < at:
            continue
        pieces += [text[at:start], re.sub(r"[^\r\n]", " ", text[start:end])]
        at = end
    pieces.append(text[at:])
    return "".join(pieces)


def vocabulary(semantic: "SemanticModel") -> Vocabulary:
    found = getattr(semantic, "_vocabulary", None)
    if found is None:
        found = semantic._vocabulary = _collect(semantic)
    return found


def _collect(semantic: "SemanticModel") -> Vocabulary:
    names: set[str] = set()
    strings: set[str] = set()
    words: set[str] = set()
    calls: set[str] = set()
    modules: set[str] = set()
    docstrings: set[int] = set()
    for node in ast.walk(semantic.tree):  # breadth first: a definition comes before its docstring
        doc = _docstring(node)
        if doc is not None:
            docstrings.add(id(doc))
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
            if isinstance(node.value, ast.Name):
                qualified = semantic.qualified_name(node)
                if qualified is not None and qualified.startswith("torch."):
                    modules.add(qualified)
        elif isinstance(node, ast.keyword) and node.arg is not None:
            names.add(node.arg)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings and _SETTING_LIKE.match(node.value):
                strings.add(node.value.lstrip("-"))
                words.update(w for w in re.split(r"[^\w]+|_", node.value) if w)
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute):
                calls.add(node.func.attr)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return Vocabulary(frozenset(names), frozenset(strings), frozenset(words), frozenset(calls), frozenset(modules))
