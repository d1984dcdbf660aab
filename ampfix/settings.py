"""Settings: rule selection, configuration files and their validation, target torch version.

Configuration lives in ``[tool.ampfix]`` of the nearest ``pyproject.toml`` (or ``--config``).
Command-line options override it. Every unknown key or bad value is an error naming the file
and the key.
"""

from __future__ import annotations

import fnmatch
import os
import re
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Optional

from ampfix.rules import ENGINE_CODES, RULES
from ampfix.rules.base import STABLE
from ampfix.rules.catalog import CATALOG

DEFAULT_TARGET_TORCH = (2, 4)
ALWAYS_REPORTED = frozenset({"AMP001"})  # syntax errors: no selection hides them (ruff)
# A test module as pytest collects one: its file name, or a folder on the way to it (from the
# project root). Its loops exercise a training step, they do not train: the rules about training
# (AMP2xx-AMP5xx) do not run there unless `check-tests` is set; the migrations (AMP1xx) do.
_TEST_FILE = re.compile(r"(test_.*|.*_test|conftest|tests?)\.py$")
_TEST_DIRS = frozenset({"test", "tests", "testing", "unittests"})
_TRAINING_RULE_PREFIXES = ("AMP2", "AMP3", "AMP4", "AMP5")
DEFAULT_EXCLUDES = (
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    ".direnv",
    ".pyenv",
    ".ipynb_checkpoints",
    ".tox",
    ".nox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".ampfix_cache",
    "__pycache__",
    "__pypackages__",
    "build",
    "dist",
    "site-packages",
    "node_modules",
    "_build",
    "buck-out",
    ".eggs",
    "*.egg-info",
)


class ConfigError(Exception):
    """A usage or configuration error: exit code 2."""


@dataclass(frozen=True)
class Settings:
    """What one file is checked with. ``Settings()`` runs every rule, preview rules and
    opportunities included (the library's default, for tests and the verifier); the command line,
    configuration files and the editor start from ``build_settings``, whose default is the stable set."""

    select: frozenset[str] = frozenset(RULES)
    per_file_ignores: tuple[tuple[str, frozenset[str]], ...] = ()
    exclude: tuple[str, ...] = DEFAULT_EXCLUDES
    extend_exclude: tuple[str, ...] = ()
    target_torch: tuple[int, int] = DEFAULT_TARGET_TORCH
    # Whether the user (--target-torch, `target-torch`) or the project (its torch requirement)
    # set the target: a shim for older torch is dead only for a floor somebody declared.
    target_torch_declared: bool = False
    unsafe_fixes: bool = False
    project_root: str = "."
    config_path: Optional[str] = None
    # Options for the loop conversions (AMP501): device when the code does not say, and dtype.
    default_device: str = "cuda"
    amp_dtype: Optional[str] = None
    # Ruff's fix-safety overrides: codes whose fixes count as safe / as unsafe.
    safe_fix_codes: frozenset[str] = frozenset()
    unsafe_fix_codes: frozenset[str] = frozenset()
    ignore_noqa: bool = False  # report what `# noqa` / `# ampfix: ignore[...]` comments suppress
    fixable: frozenset[str] = frozenset(RULES)  # codes whose fixes are offered and applied
    preview: bool = True  # preview rules may be selected (ruff's --preview)
    check_tests: bool = False  # the training rules run in test modules too
    # what the user should hear about the selection (a preview rule named without --preview)
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def enabled(self, path: str) -> frozenset[str]:
        """Codes selected for path once per-file ignores apply. A file that is parsed and does not
        parse is always reported (AMP001), whatever is selected or ignored, as ruff does."""
        rel = _relative(path, self.project_root)
        testing = not self.check_tests and is_test_module(rel)
        if not self.per_file_ignores and not testing:
            return self.select | ALWAYS_REPORTED
        codes = {c for c in self.select if not (testing and c.startswith(_TRAINING_RULE_PREFIXES))}
        for pattern, ignored in self.per_file_ignores:
            if _glob_match(rel, pattern):
                codes -= ignored
        return frozenset(codes) | ALWAYS_REPORTED

    def cache_key(self) -> str:
        return repr(
            (
                sorted(self.select),
                self.per_file_ignores,
                self.target_torch,
                self.target_torch_declared,
                self.default_device,
                self.amp_dtype,
                sorted(self.safe_fix_codes),
                sorted(self.unsafe_fix_codes),
                self.ignore_noqa,
                sorted(self.fixable),
                self.preview,
                self.check_tests,
            )
        )


# -- selectors --------------------------------------------------------------------------------


def _matching(selector: str) -> list[str]:
    selector = selector.strip().upper()
    if selector == "ALL":
        return list(RULES)
    return [code for code in RULES if code.startswith(selector)]


def validate_selectors(selectors: Iterable[str], where: str) -> list[str]:
    out = []
    for selector in selectors:
        selector = selector.strip()
        if not selector:
            continue
        if not re.fullmatch(r"(?i)ALL|AMP\d{0,3}", selector) or not _matching(selector):
            raise ConfigError(f"{where}: unknown rule selector `{selector}`")
        out.append(selector.upper())
    return out


def resolve_layers(
    layers: list[tuple[Optional[list], list, list]], exact_only: frozenset[str] = frozenset()
) -> frozenset[str]:
    """Ruff's order: the configuration's (select, extend-select, ignore), then the command
    line's, each applied on what the one before chose. A layer's ``select`` starts over; within a
    layer the most specific selector decides for each code, ignore winning ties; a code no
    selector of a layer names keeps what the layer before decided. A code of ``exact_only``
    (an opportunity) is selected only by a selector that names it exactly, never by ``ALL`` or a prefix."""
    chosen: set[str] = set()
    for select, extend_select, ignore in layers:
        positive = [*(select or []), *extend_select]
        if select is not None:
            chosen = set()
        for code in RULES:
            named = [s for s in positive if (s == code if code in exact_only else code in _matching(s))]
            best_pos = max((_specificity(s) for s in named), default=-1)
            best_neg = max((_specificity(s) for s in ignore if code in _matching(s)), default=-1)
            if best_pos == best_neg == -1:
                continue
            if best_pos > best_neg:
                chosen.add(code)
            else:
                chosen.discard(code)
    return frozenset(chosen)


OPPORTUNITIES = frozenset(code for code, entry in CATALOG.items() if entry.opportunity)


def by_tier(
    selected: frozenset[str], layers: list[tuple[Optional[list], list, list]], preview: bool
) -> tuple[frozenset[str], tuple[str, ...]]:
    """The selection without preview rules unless ``preview`` is on, and a warning for each
    preview rule a selector named by its exact code (ruff: "has no effect because preview is
    not enabled"). An opportunity (AMP501) is in a selection only when its exact code is named:
    that is the opt-in, so it runs whatever its tier."""
    if preview:
        return selected, ()
    kept = frozenset(code for code in selected if CATALOG[code].stability == STABLE or CATALOG[code].opportunity)
    named = {s for select, extend_select, _ in layers for s in [*(select or []), *extend_select]}
    warnings = tuple(
        f"selection `{code}` has no effect because preview is not enabled: "
        f"add `--preview` (or `preview = true` in the configuration) to run preview rules"
        for code in sorted(selected - kept) if code in named
    )
    return kept, warnings


def resolve_fix_safety(safe: Iterable[str], unsafe: Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
    """``extend-safe-fixes`` / ``extend-unsafe-fixes``: for each code the most specific selector
    decides, and unsafe wins ties (ruff's precedence)."""
    safe, unsafe = list(safe), list(unsafe)
    promoted, demoted = set(), set()
    for code in RULES:
        best_safe = max((_specificity(s) for s in safe if code in _matching(s)), default=-1)
        best_unsafe = max((_specificity(s) for s in unsafe if code in _matching(s)), default=-1)
        if best_safe > best_unsafe:
            promoted.add(code)
        elif best_unsafe >= 0:
            demoted.add(code)
    return frozenset(promoted), frozenset(demoted)


def _specificity(selector: str) -> int:
    return 0 if selector.upper() == "ALL" else len(selector)


# -- configuration files ------------------------------------------------------------------------

_KEYS = {
    "select",
    "ignore",
    "extend-select",
    "exclude",
    "extend-exclude",
    "per-file-ignores",
    "target-torch",
    "unsafe-fixes",
    "extend-safe-fixes",
    "extend-unsafe-fixes",
    "default-device",
    "amp-dtype",
    "extend",
    "fixable",
    "unfixable",
    "preview",
    "check-tests",
}
# In each folder, the first of these that exists is its configuration (ruff's order): the two
# ampfix files hold the settings at their top level, pyproject.toml under [tool.ampfix].
CONFIG_NAMES = (".ampfix.toml", "ampfix.toml", "pyproject.toml")
# ruff's `extend`: the rule selection of each file is a layer over the one it extends (a child's
# `ignore` adjusts the parent's choice, its `select` starts over); these lists are appended; every
# other key of the child replaces the parent's.
_LAYERED_KEYS = ("select", "extend-select", "ignore", "fixable", "unfixable")
_APPENDED_KEYS = ("extend-exclude", "extend-safe-fixes", "extend-unsafe-fixes")


@dataclass
class FileConfig:
    path: Optional[str] = None
    root: str = "."
    values: dict[str, Any] = field(default_factory=dict)
    torch_requirement: Optional[tuple[int, int]] = None
    # the selection keys of the files this one extends, base first: (their path, their keys)
    inherited_layers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)  # key -> the file(s) its value comes from


def find_config(start: str) -> FileConfig:
    """The nearest configuration, walking up from start: in each folder ``.ampfix.toml``, then
    ``ampfix.toml``, then a pyproject.toml with a [tool.ampfix] table.

    A pyproject.toml without the table is skipped for settings (as ruff does) but still
    consulted for the project's torch requirement.
    """
    directory = os.path.abspath(start if os.path.isdir(start) else os.path.dirname(start) or ".")
    requirement_source: Optional[FileConfig] = None
    while True:
        candidate = next((os.path.join(directory, n) for n in CONFIG_NAMES if os.path.isfile(os.path.join(directory, n))), None)
        if candidate is not None:
            config = load_config(candidate, require_table=False)
            if config.path is not None:
                if config.torch_requirement is None and requirement_source is not None:
                    config.torch_requirement = requirement_source.torch_requirement
                return config
            if requirement_source is None:
                requirement_source = config
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    fallback = FileConfig(root=os.getcwd())
    if requirement_source is not None:
        fallback.torch_requirement = requirement_source.torch_requirement
    return fallback


def _toml():
    """The TOML parser, imported when a configuration is read (a run without one never needs it)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib


def load_config(path: str, require_table: bool = True, _extending: tuple = ()) -> FileConfig:
    """One configuration file; ``extend = "PATH"`` (relative to it) inherits another one's
    settings, which this file's own keys override (ruff's ``extend``)."""
    tomllib = _toml()
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    is_pyproject = os.path.basename(path) == "pyproject.toml"
    table = data.get("tool", {}).get("ampfix") if is_pyproject else data.get("tool", {}).get("ampfix", data)
    requirement = _torch_requirement(data, path)
    root = os.path.dirname(os.path.abspath(path))
    if table is None:
        if require_table:
            raise ConfigError(f"{path}: no [tool.ampfix] table")
        return FileConfig(None, root, {}, requirement)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: `tool.ampfix` must be a table")
    prefix = "tool.ampfix." if is_pyproject else ""
    for key in table:
        if key not in _KEYS:
            raise ConfigError(
                f"{path}: unknown key `{prefix}{key}` (expected one of: {', '.join(sorted(_KEYS))})"
            )
    values = dict(table)
    base = values.pop("extend", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: `{prefix}extend` must be the path of another configuration file")
        target = os.path.normpath(os.path.join(root, os.path.expanduser(base)))
        if target in _extending or target == os.path.abspath(path):
            raise ConfigError(f"{path}: `{prefix}extend` makes a cycle through {target}")
        inherited = load_config(target, require_table=True, _extending=(*_extending, os.path.abspath(path)))
        own, values = values, {k: v for k, v in inherited.values.items() if k not in _LAYERED_KEYS}
        values.update(own)
        for key in _APPENDED_KEYS:
            if key in own and key in inherited.values:
                values[key] = [
                    *_string_list(inherited.values[key], _key_where(inherited.path, key)),
                    *_string_list(own[key], _key_where(path, key)),
                ]
        layer = {k: v for k, v in inherited.values.items() if k in _LAYERED_KEYS}
        layers = [*inherited.inherited_layers, (inherited.path, layer)]
        requirement = requirement or inherited.torch_requirement
        origins = {**inherited.origins, **{k: path for k in own}}
        origins.update({k: f"{inherited.origins[k]} + {path}" for k in _APPENDED_KEYS if k in own and k in inherited.values})
        return FileConfig(path, root, values, requirement, layers, origins)
    return FileConfig(path, root, values, requirement, origins={k: path for k in values})


def _key_where(path: Optional[str], key: str) -> str:
    """How an error names a key: in the file that set it, or as the command-line option."""
    if not path:
        return f"--{key}"
    return f"{path}: `tool.ampfix.{key}`" if os.path.basename(path) == "pyproject.toml" else f"{path}: `{key}`"


def _torch_requirement(data: dict, path: str) -> Optional[tuple[int, int]]:
    """Lower bound of the project's own torch requirement (``torch>=2.1`` -> (2, 1))."""
    project = data.get("project")
    deps = project.get("dependencies", []) if isinstance(project, dict) else []
    if not isinstance(deps, list):
        return None
    for dep in deps:
        if not isinstance(dep, str):
            continue
        match = re.match(r"\s*torch\s*(\[[^\]]*\])?\s*(?P<spec>[^;]*)", dep)
        if not match or re.match(r"\s*torch[\w.-]", dep):
            continue
        bound = re.search(r"(>=|==|~=|>)\s*(\d+)\.(\d+)", match.group("spec"))
        if bound:
            return int(bound.group(2)), int(bound.group(3))
    return None


def parse_version(value: Any, where: str) -> tuple[int, int]:
    if isinstance(value, float):
        # TOML reads 2.10 as the number 2.1: a version is a string (ruff rejects target-version = 3.10)
        raise ConfigError(f'{where}: invalid torch version {value} (a TOML number): write it as a string, e.g. "2.10" (TOML reads 2.10 as 2.1)')
    match = re.fullmatch(r"\s*(\d+)\.(\d+)(?:\.\d+)?\s*", str(value))
    if not match or isinstance(value, bool):
        raise ConfigError(f"{where}: invalid torch version `{value}` (expected X.Y, e.g. 2.4)")
    return int(match.group(1)), int(match.group(2))


def _string_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of strings")
    return value


@dataclass
class CliOverrides:
    select: Optional[list[str]] = None
    ignore: list[str] = field(default_factory=list)
    extend_select: list[str] = field(default_factory=list)
    target_torch: Optional[str] = None
    unsafe_fixes: Optional[bool] = None
    default_device: Optional[str] = None
    amp_dtype: Optional[str] = None
    extend_safe_fixes: list[str] = field(default_factory=list)
    extend_unsafe_fixes: list[str] = field(default_factory=list)
    ignore_noqa: bool = False
    fixable: Optional[list[str]] = None
    unfixable: list[str] = field(default_factory=list)
    preview: Optional[bool] = None
    exclude: Optional[list[str]] = None  # replaces the configured `exclude`
    extend_exclude: list[str] = field(default_factory=list)
    per_file_ignores: Optional[dict[str, list[str]]] = None  # replaces the configured table
    # `--config KEY=VALUE` (TOML): over every configuration file, under the other options (ruff)
    config_values: dict[str, Any] = field(default_factory=dict)


def inline_config(text: str) -> dict[str, Any]:
    """The keys of one ``--config 'KEY = VALUE'`` (a TOML pair, as a configuration file holds it)."""
    tomllib = _toml()
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config: `{text}` is neither a file nor a TOML `KEY = VALUE` pair ({exc})") from None
    for key in values:
        if key not in _KEYS or key == "extend":
            raise ConfigError(f"--config: unknown key `{key}` (expected one of: {', '.join(sorted(_KEYS - {'extend'}))})")
    return values


def build_settings(config: FileConfig, cli: CliOverrides) -> Settings:
    """Merge a configuration file with command-line options (the command line wins)."""
    inline = cli.config_values
    values = {**config.values, **{k: v for k, v in inline.items() if k not in _LAYERED_KEYS}}
    for key in _APPENDED_KEYS:  # a layer over the file's, as `extend` makes one
        if key in inline and key in config.values:
            values[key] = [*_string_list(config.values[key], _key_where(config.path, key)), *_string_list(inline[key], f"--config: `{key}`")]
    where = config.path or "configuration"

    in_pyproject = config.path is not None and os.path.basename(config.path) == "pyproject.toml"

    def key_where(key: str) -> str:
        if key.split(".", 1)[0] in inline:
            return f"--config: `{key}`"
        if key.startswith("per-file-ignores") and cli.per_file_ignores is not None:
            return f"--per-file-ignores {key[len('per-file-ignores.'):]}".rstrip()
        if not config.path:
            return f"--{key}"
        return f"{where}: `tool.ampfix.{key}`" if in_pyproject else f"{where}: `{key}`"

    # layers, as ruff resolves them: each configuration's selectors (those it extends first), then
    # the command line's
    files = [*config.inherited_layers, (config.path, {k: values[k] for k in _LAYERED_KEYS if k in values})]
    if any(k in inline for k in _LAYERED_KEYS):
        files.append(("--config", {k: inline[k] for k in _LAYERED_KEYS if k in inline}))
    config_layers = [_selection_layer(layer, path, first=i == 0) for i, (path, layer) in enumerate(files)]
    fixable_layers = [
        _selection_layer(layer, path, i == 0, ("fixable", None, "unfixable")) for i, (path, layer) in enumerate(files)
    ]
    cli_layer = (
        validate_selectors(cli.select, "--select") if cli.select is not None else None,
        validate_selectors(cli.extend_select, "--extend-select"),
        validate_selectors(cli.ignore, "--ignore"),
    )

    per_file = values.get("per-file-ignores", {}) if cli.per_file_ignores is None else cli.per_file_ignores
    if not isinstance(per_file, dict):
        raise ConfigError(f"{key_where('per-file-ignores')}: expected a table of glob = [codes]")
    per_file_ignores = tuple(
        (
            pattern,
            frozenset(
                code
                for selector in validate_selectors(
                    _string_list(codes, key_where(f'per-file-ignores."{pattern}"')),
                    key_where(f'per-file-ignores."{pattern}"'),
                )
                for code in _matching(selector)
            ),
        )
        for pattern, codes in per_file.items()
    )

    if cli.target_torch is not None:
        target = parse_version(cli.target_torch, "--target-torch")
    elif "target-torch" in values:
        target = parse_version(values["target-torch"], key_where("target-torch"))
    else:
        target = config.torch_requirement or DEFAULT_TARGET_TORCH
    target_declared = cli.target_torch is not None or "target-torch" in values or config.torch_requirement is not None

    unsafe = _flag(values, "unsafe-fixes", cli.unsafe_fixes, key_where)
    preview = _flag(values, "preview", cli.preview, key_where)
    check_tests = _flag(values, "check-tests", None, key_where)
    select, selection_warnings = by_tier(
        resolve_layers([*config_layers, cli_layer], exact_only=OPPORTUNITIES), [*config_layers, cli_layer], preview
    )

    # a bad value is reported where it was given: the command line, or the configuration file
    device = cli.default_device or values.get("default-device", "cuda")
    if device not in ("cuda", "cpu", "xpu", "mps", "hpu"):
        given = "--default-device" if cli.default_device else key_where("default-device")
        raise ConfigError(f"{given}: expected one of cuda, cpu, xpu, mps, hpu")
    dtype = cli.amp_dtype or values.get("amp-dtype")
    if dtype not in (None, "float16", "bfloat16"):
        given = "--amp-dtype" if cli.amp_dtype else key_where("amp-dtype")
        raise ConfigError(f"{given}: expected float16 or bfloat16")

    safety = {}
    for key, extra in (("extend-safe-fixes", cli.extend_safe_fixes), ("extend-unsafe-fixes", cli.extend_unsafe_fixes)):
        safety[key] = validate_selectors(_string_list(values.get(key, []), key_where(key)), key_where(key))
        safety[key] += validate_selectors(extra, f"--{key}")
    safe_codes, unsafe_codes = resolve_fix_safety(safety["extend-safe-fixes"], safety["extend-unsafe-fixes"])

    exclude = tuple(_string_list(values["exclude"], key_where("exclude"))) if "exclude" in values else DEFAULT_EXCLUDES
    if cli.exclude is not None:
        exclude = tuple(cli.exclude)
    extend_exclude = tuple(_string_list(values.get("extend-exclude", []), key_where("extend-exclude")))
    extend_exclude += tuple(cli.extend_exclude)

    return Settings(
        select=select,
        preview=preview,
        check_tests=check_tests,
        warnings=selection_warnings,
        per_file_ignores=per_file_ignores,
        exclude=exclude,
        extend_exclude=extend_exclude,
        target_torch=target,
        target_torch_declared=target_declared,
        unsafe_fixes=unsafe,
        project_root=config.root,
        config_path=config.path,
        default_device=device,
        amp_dtype=dtype,
        ignore_noqa=cli.ignore_noqa,
        fixable=resolve_layers([
            *fixable_layers,
            (
                validate_selectors(cli.fixable, "--fixable") if cli.fixable is not None else None,
                [],
                validate_selectors(cli.unfixable, "--unfixable"),
            ),
        ]),
        safe_fix_codes=safe_codes,
        unsafe_fix_codes=unsafe_codes,
    )


def _flag(values: dict, key: str, given: Optional[bool], key_where) -> bool:
    """A true/false setting: the command line's if given, else the configuration's (default false)."""
    value = values.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{key_where(key)}: expected true or false")
    return value if given is None else given


def default_settings() -> Settings:
    """What a run with no configuration and no options checks with: the stable rules."""
    return build_settings(FileConfig(), CliOverrides())


def _selection_layer(values: dict, path: Optional[str], first: bool, keys=("select", "extend-select", "ignore")) -> tuple:
    """One configuration file's (select, extend-select, ignore), or with ``keys`` its (fixable, -,
    unfixable): a first file without the first key selects ALL, a later one keeps what the files
    it extends chose."""

    def selectors(key: Optional[str], default):
        if key is None or key not in values:
            return default
        return validate_selectors(_string_list(values[key], _key_where(path, key)), _key_where(path, key))

    select, extend, ignore = keys
    return selectors(select, ["ALL"] if first else None), selectors(extend, []), selectors(ignore, [])


def known_code(code: str) -> bool:
    return code.upper() in RULES or code.upper() in ENGINE_CODES


def is_test_module(relative: str) -> bool:
    """Whether the file at ``relative`` (from the project root) is a test module, as pytest finds
    them: ``test_*.py``, ``*_test.py``, ``conftest.py``, or a file under a ``tests/`` folder. A
    path outside the root is judged by its file name alone."""
    parts = relative.split("/")
    folders = [] if parts[0] == ".." else parts[:-1]
    return bool(_TEST_FILE.match(parts[-1])) or bool(_TEST_DIRS & set(folders))


def _relative(path: str, root: str) -> str:
    try:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    except ValueError:
        rel = path
    return rel.replace(os.sep, "/")


def _glob_match(rel: str, pattern: str) -> bool:
    pattern = pattern.replace(os.sep, "/")
    if "/" not in pattern:
        return fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], pattern) or fnmatch.fnmatchcase(rel, pattern)
    return fnmatch.fnmatchcase(rel, pattern.lstrip("./")) or fnmatch.fnmatchcase(rel, pattern + "/*")


__all__ = ["ConfigError", "Settings", "build_settings", "find_config", "load_config", "replace"]


def describe_settings(
    config: FileConfig, cli: CliOverrides, settings: Settings, chosen_by: str = "the nearest configuration file"
) -> list[tuple[str, str, str]]:
    """(key, resolved value, where it came from) for ``--show-settings``: the file of each key
    (the one it extends, when inherited), ``--config`` for an inline pair, the command line."""

    def source(key: str, given, appended: bool = False) -> str:
        given = given not in (None, [], (), {})
        origins = [config.origins[key]] if key in config.values and key in config.origins else []
        if key in cli.config_values:
            origins = [*origins, "--config"] if appended else ["--config"]
        if given:
            origins = [*origins, "command line"] if appended else ["command line"]
        return " + ".join(origins) or "default"

    selection = [path for path, layer in config.inherited_layers if layer.keys() & {"select", "extend-select", "ignore"}]
    selection += [config.origins.get(k, config.path) for k in ("select", "extend-select", "ignore") if k in config.values][:1]
    if cli.config_values.keys() & {"select", "extend-select", "ignore"}:
        selection = (selection if "select" not in cli.config_values else []) + ["--config"]
    if cli.select is not None or cli.ignore or cli.extend_select:
        selection = (selection if cli.select is None else []) + ["command line"]
    if cli.target_torch is not None or "target-torch" in config.values or "target-torch" in cli.config_values:
        torch_from = source("target-torch", cli.target_torch)
    elif config.torch_requirement is not None:
        torch_from = "the project's torch requirement"
    else:
        torch_from = "default"
    return [
        ("config", config.path or "(none)", chosen_by),
        ("project-root", settings.project_root, "the configuration's folder (or the working directory)"),
        ("select", ", ".join(sorted(settings.select)), " + ".join(selection) or "default"),
        ("preview", str(settings.preview).lower(), source("preview", cli.preview)),
        ("check-tests", str(settings.check_tests).lower(), source("check-tests", None)),
        ("per-file-ignores", "; ".join(f"{p}: {', '.join(sorted(c))}" for p, c in settings.per_file_ignores) or "(none)",
         source("per-file-ignores", cli.per_file_ignores)),
        ("exclude", ", ".join(settings.exclude), source("exclude", cli.exclude)),
        ("extend-exclude", ", ".join(settings.extend_exclude) or "(none)",
         source("extend-exclude", cli.extend_exclude, appended=True)),
        ("target-torch", ".".join(map(str, settings.target_torch)), torch_from),
        ("unsafe-fixes", str(settings.unsafe_fixes).lower(), source("unsafe-fixes", cli.unsafe_fixes)),
        ("extend-safe-fixes", ", ".join(sorted(settings.safe_fix_codes)) or "(none)",
         source("extend-safe-fixes", cli.extend_safe_fixes, appended=True)),
        ("extend-unsafe-fixes", ", ".join(sorted(settings.unsafe_fix_codes)) or "(none)",
         source("extend-unsafe-fixes", cli.extend_unsafe_fixes, appended=True)),
        ("default-device", settings.default_device, source("default-device", cli.default_device)),
        ("amp-dtype", settings.amp_dtype or "(float16; bfloat16 for literal CPU code)", source("amp-dtype", cli.amp_dtype)),
    ]
