"""What the analysis layers need of a module: its tree, text and semantic table.

``ampfix.context.ModuleContext`` provides it (and more, for rules); the program and training
layers are typed against this protocol so that imports run one way: context -> training ->
program, never back.
"""

from __future__ import annotations

import ast
from typing import Any, Protocol

from ampfix.semantic import SemanticModel


class ModuleSource(Protocol):
    path: str
    text: str
    tree: ast.Module
    settings: Any  # ampfix.settings.Settings (default device, AMP dtype)
    project: Any  # ampfix.program.project.ProjectIndex, or None (one file alone: stdin, tests)

    @property
    def semantic(self) -> SemanticModel: ...

    @property
    def training(self) -> Any: ...  # ampfix.training.model.TrainingModel, built once per module

    def segment(self, node: ast.AST) -> str: ...
