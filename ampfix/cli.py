"""The command line: a thin layer over ampfix.runner and ampfix.report.

    ampfix check [PATHS]...     report (default command: `ampfix src/`, `ampfix --apply`)
    ampfix rule CODE | --all    print a rule's document / list the rules
    ampfix verify SCRIPT        run original and rewrite under a harness (needs ampfix[verify])

Exit codes: 0 nothing left to report; 1 problems remain (or --diff would change something);
2 usage, configuration or internal error, or a file that cannot be read.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import click

from ampfix import __version__
from ampfix.cache import Cache
from ampfix.docs import rule_doc
from ampfix.report import (
    FORMATS,
    WRITERS,
    SourceCache,
    level_of,
    summary,
    unified_diff,
    use_colour,
    write_fixes,
    write_statistics,
    write_text,
)
from ampfix.rules import RULES
from ampfix.rules.base import STABLE
from ampfix.runner import CHECK, DIFF, FIX, Job, all_diagnostics, run
from ampfix.settings import (
    CONFIG_NAMES,
    CliOverrides,
    ConfigError,
    FileConfig,
    Settings,
    build_settings,
    describe_settings,
    find_config,
    load_config,
)
from ampfix.source import SourceError, SourceText

COMMANDS = ("check", "clean", "rule", "server", "verify")
PROGRESS_THRESHOLD = 300


def _split(values: tuple[str, ...]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


class UsageFailure(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"ampfix: error: {self.format_message()}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="ampfix")
def cli() -> None:
    """Find and fix PyTorch mixed-precision (AMP) mistakes.

    `ampfix PATHS` and `ampfix --apply PATHS` are shorthands for `ampfix check ...`.
    `ampfix check` only reads code; it never imports or executes it.
    """


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(readable=False))  # an unreadable file is that file's error
@click.option("--apply", "--fix", "apply", is_flag=True, help="Apply safe fixes in place.")
@click.option("--unsafe-fixes/--no-unsafe-fixes", default=None, help="Also apply (or offer) fixes that may change behaviour.")
@click.option("--diff", is_flag=True, help="Print the diffs fixes would make; write nothing. Exit 1 if any.")
@click.option("--select", multiple=True, help="Rule codes or prefixes to enable (AMP1, AMP101, ALL). Replaces the configured set.")
@click.option("--ignore", multiple=True, help="Rule codes or prefixes to disable.")
@click.option("--extend-select", multiple=True, help="Rule codes or prefixes to enable in addition.")
@click.option("--extend-safe-fixes", multiple=True, help="Rule codes or prefixes whose fixes count as safe.")
@click.option("--extend-unsafe-fixes", multiple=True, help="Rule codes or prefixes whose fixes count as unsafe.")
@click.option("--fixable", multiple=True, help="Rule codes or prefixes whose fixes are offered (replaces the configured set).")
@click.option("--unfixable", multiple=True, help="Rule codes or prefixes whose fixes are never offered or applied.")
@click.option(
    "--output-format",
    type=click.Choice(FORMATS),
    default=None,
    envvar="AMPFIX_OUTPUT_FORMAT",
    help="How to print findings [default: text].",
)
@click.option("--preview/--no-preview", default=None, help="Enable preview rules (not yet stable), as ruff's --preview.")
@click.option("--statistics", is_flag=True, help="Print a count per rule instead of each finding.")
@click.option("--show-fixes", is_flag=True, help="Show each fix's diff under its finding; with --apply, list the fixes applied per file.")
@click.option("--exit-zero", is_flag=True, help="Exit 0 even if problems remain.")
@click.option("--config", "config_options", multiple=True, metavar="FILE | KEY=VALUE",
              help="A configuration file to use, or a TOML `KEY = VALUE` over every configuration (repeatable).")
@click.option("--isolated", is_flag=True, help="Ignore all configuration files.")
@click.option("--exclude", multiple=True, help="Patterns to exclude (replaces the configured `exclude`).")
@click.option("--extend-exclude", multiple=True, help="Patterns to exclude in addition.")
@click.option("--per-file-ignores", multiple=True, metavar="PATTERN:CODES",
              help="Codes to ignore in files matching PATTERN (replaces the configured table), e.g. 'tests/*:AMP1'.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None, help="Worker processes [default: CPU count].")
@click.option("--target-torch", default=None, metavar="X.Y", help="Oldest torch the code must run on.")
@click.option("--force-exclude", is_flag=True, help="Apply exclusions even to files named explicitly.")
@click.option("--quiet", "-q", is_flag=True, help="Print findings only: no summary, no progress.")
@click.option("--stdin-filename", default=None, help="The path of the code read from stdin ('-').")
@click.option("--default-device", default=None, help="Device for conversions when the code does not say.")
@click.option("--amp-dtype", type=click.Choice(["float16", "bfloat16"]), default=None, help="Low-precision dtype for conversions.")
@click.option("--no-cache", "-n", is_flag=True, envvar="AMPFIX_NO_CACHE", help="Neither read nor write .ampfix_cache/.")
@click.option("--show-settings", is_flag=True, help="Print the settings the first path is checked with, and where each comes from.")
@click.option("--ignore-noqa", is_flag=True, help="Report findings that `# noqa` comments suppress.")
@click.option("--add-noqa", is_flag=True, help="Suppress every finding reported now with a `# noqa: CODE` comment (a baseline).")
@click.option("--fix-only", is_flag=True, help="Apply fixes (as --apply) and report only what was fixed.")
@click.option("--exit-non-zero-on-fix", is_flag=True, help="Exit 1 when a fix was applied, even if nothing remains.")
@click.option("--output-file", "-o", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the report to this file instead of stdout.")
def check(
    paths: tuple[str, ...],
    apply: bool,
    unsafe_fixes: Optional[bool],
    diff: bool,
    select: tuple[str, ...],
    ignore: tuple[str, ...],
    extend_select: tuple[str, ...],
    extend_safe_fixes: tuple[str, ...],
    extend_unsafe_fixes: tuple[str, ...],
    fixable: tuple[str, ...],
    unfixable: tuple[str, ...],
    output_format: Optional[str],
    statistics: bool,
    show_fixes: bool,
    exit_zero: bool,
    config_options: tuple[str, ...],
    isolated: bool,
    exclude: tuple[str, ...],
    extend_exclude: tuple[str, ...],
    per_file_ignores: tuple[str, ...],
    jobs: Optional[int],
    target_torch: Optional[str],
    force_exclude: bool,
    quiet: bool,
    stdin_filename: Optional[str],
    default_device: Optional[str],
    amp_dtype: Optional[str],
    no_cache: bool,
    show_settings: bool = False,
    ignore_noqa: bool = False,
    add_noqa: bool = False,
    fix_only: bool = False,
    exit_non_zero_on_fix: bool = False,
    output_file: Optional[str] = None,
    preview: Optional[bool] = None,
) -> None:
    """Check PATHS (default: .) for AMP mistakes; `-` reads stdin."""
    paths = paths or (".",)
    apply = apply or fix_only
    overrides = CliOverrides(
        select=_split(select) or None,
        ignore=_split(ignore),
        extend_select=_split(extend_select),
        extend_safe_fixes=_split(extend_safe_fixes),
        extend_unsafe_fixes=_split(extend_unsafe_fixes),
        target_torch=target_torch,
        unsafe_fixes=unsafe_fixes,
        default_device=default_device,
        amp_dtype=amp_dtype,
        ignore_noqa=ignore_noqa,
        fixable=_split(fixable) or None,
        unfixable=_split(unfixable),
        preview=preview,
        exclude=_split(exclude) or None,
        extend_exclude=_split(extend_exclude),
    )
    anchor = stdin_filename if paths == ("-",) and stdin_filename else paths[0]
    try:
        overrides.per_file_ignores = _per_file_ignores(per_file_ignores)
        config_file = _config_file(config_options, overrides, isolated)
        configs = _Configurations(overrides, isolated, config_file)
        settings = configs.for_path(anchor if os.path.exists(anchor) else ".")
    except ConfigError as exc:
        raise UsageFailure(str(exc)) from None
    if show_settings:
        config, resolved = configs.config_and_settings(anchor if os.path.exists(anchor) else ".")
        chosen_by = "--isolated: no configuration file" if isolated else "--config" if config_file else (
            "the nearest .ampfix.toml, ampfix.toml or pyproject.toml with [tool.ampfix]")
        for key, value, origin in describe_settings(config, overrides, resolved, chosen_by):
            click.echo(f"{key:<20} = {value}    # {origin}")
        sys.exit(0)
    mode = CHECK if add_noqa else DIFF if diff else FIX if apply else CHECK
    fmt = output_format or "text"

    if paths == ("-",):
        sys.exit(_check_stdin(settings, mode, fmt, stdin_filename, force_exclude, statistics, quiet, exit_zero))

    from ampfix.discovery import Discovery, discover

    # ruff's model: each file is checked with the settings of its nearest configuration (a
    # monorepo's packages keep their own), whatever the order of the paths given
    try:
        given_by_settings: dict[int, tuple[Settings, list[str]]] = {}
        for given in paths:  # the excludes of a path given are those of its configuration
            given_settings = configs.for_path(given if os.path.exists(given) else ".")
            given_by_settings.setdefault(id(given_settings), (given_settings, []))[1].append(given)
        found, seen = Discovery(), set()
        for given_settings, given_paths in given_by_settings.values():
            more = discover(given_paths, given_settings, force_exclude=force_exclude)
            for path in more.files:
                if os.path.abspath(path) not in seen:
                    seen.add(os.path.abspath(path))
                    found.files.append(path)
            found.missing += more.missing
        groups: dict[int, tuple[Settings, list[str]]] = {}
        for path in sorted(found.files):
            file_settings = configs.for_file(path)
            groups.setdefault(id(file_settings), (file_settings, []))[1].append(path)
    except ConfigError as exc:
        raise UsageFailure(str(exc)) from None
    for missing in found.missing:
        click.echo(f"ampfix: error: {missing}: no such file or directory", err=True)
    progress = _progress_bar(len(found.files), quiet)
    results = []
    try:
        for group_settings, files in groups.values():
            cache = None if no_cache else Cache(group_settings).load()
            job = Job(mode, group_settings, group_settings.unsafe_fixes, use_cache=cache is not None)
            results += run(files, job, jobs, progress.update if progress else None, cache)
    finally:
        if progress:
            progress.close()
    results.sort(key=lambda r: r.path)
    errors = [r for r in results if r.error]
    for result in errors:
        click.echo(f"ampfix: error: {result.path}: {result.error}", err=True)
    remaining = all_diagnostics(results)
    fixed = sum(len(r.fixed) for r in results)
    had_errors = bool(errors or found.missing)
    if output_file is not None:
        try:
            out = open(output_file, "w", encoding="utf-8")
        except OSError as exc:
            raise UsageFailure(f"{output_file}: cannot write the report: {exc.strerror or exc}") from None
    else:
        out = _text_stream(sys.stdout)

    if mode == DIFF:
        for result in results:
            if result.fixed_source is not None:
                out.write(_diff(result.path, result.original, result.fixed_source))
        if not quiet:
            click.echo(summary(remaining, fixed, settings.unsafe_fixes, "diff", len(errors) + len(found.missing)), err=True)
        code = 2 if errors or found.missing else 1 if fixed else 0
        sys.exit(code)

    if add_noqa:
        added, skipped = _add_noqa(results)
        if not quiet:
            extra = f" ({skipped} line{'s' if skipped != 1 else ''} where a comment cannot go left as they are)" if skipped else ""
            out.write(f"Added {added} noqa directive{'s' if added != 1 else ''}.{extra}\n")
        out.flush()
        sys.exit(2 if had_errors else 0)
    if fix_only:
        # ruff's --fix-only: what was fixed, nothing about what remains
        if show_fixes:
            write_fixes(out, ((r.path, r.fixed) for r in results))
        if fmt in ("text", "concise") and not quiet:
            out.write((f"Fixed {fixed} problem{'s' if fixed != 1 else ''}." if fixed else "No fixes applied.") + "\n")
        out.flush()
        sys.exit(2 if had_errors else 1 if (exit_non_zero_on_fix and fixed) else 0)
    colour = output_file is None and use_colour(out)
    _emit(out, remaining, settings.unsafe_fixes, fmt, statistics, SourceCache(), colour, show_fixes)
    if show_fixes and mode == FIX:
        write_fixes(out, ((r.path, r.fixed) for r in results))
    if fmt in ("text", "concise") and not quiet:
        line = summary(
            remaining, fixed, settings.unsafe_fixes, "fix" if mode == FIX else "check", len(errors) + len(found.missing)
        )
        if line:
            out.write((click.style(line, fg="green", bold=True) if colour and line == "All checks passed!" else line) + "\n")
    out.flush()
    code = _exit_code(remaining, had_errors, exit_zero)
    sys.exit(1 if code == 0 and exit_non_zero_on_fix and fixed else code)


def _text_stream(stream):
    """``sys.stdout`` / ``sys.stderr``, in UTF-8 where the locale says ASCII (as click's own
    streams write; ``click.get_text_stream`` is gone in Click 9)."""
    import codecs

    if codecs.lookup(getattr(stream, "encoding", None) or "ascii").name == "ascii" and hasattr(stream, "reconfigure"):
        stream.reconfigure(encoding="utf-8")
    return stream


def _config_file(options: tuple[str, ...], overrides: CliOverrides, isolated: bool) -> Optional[str]:
    """ruff's ``--config``: the configuration file among the options (at most one), the inline
    ``KEY = VALUE`` pairs put in ``overrides``. A file with ``--isolated`` is an error."""
    from ampfix.settings import inline_config

    files = []
    for option in options:
        if "=" in option and not os.path.isfile(option):
            overrides.config_values.update(inline_config(option))
        else:
            files.append(option)
    if len(files) > 1:
        raise ConfigError(f"--config: one configuration file at most (given: {', '.join(files)})")
    if files and isolated:
        raise ConfigError(f"--config {files[0]} cannot be used with --isolated, which ignores every configuration file")
    return files[0] if files else None


def _per_file_ignores(values: tuple[str, ...]) -> Optional[dict[str, list[str]]]:
    """``--per-file-ignores 'tests/*:AMP1,AMP2'`` or ruff's ``'a.py:AMP1,b.py:AMP2'`` (repeatable)
    as the configuration's table: a comma-separated piece with a colon starts a pattern."""
    if not values:
        return None
    table: dict[str, list[str]] = {}
    for value in values:
        pattern = None
        for piece in _split((value,)):
            if ":" in piece:
                pattern, _, piece = piece.rpartition(":")
            if not pattern or not piece.strip():
                raise ConfigError(f"--per-file-ignores: expected PATTERN:CODES (e.g. 'tests/*:AMP1'), got `{value}`")
            table.setdefault(pattern.strip(), []).append(piece.strip())
    return table


def _add_noqa(results) -> tuple[int, int]:
    """Write ``# noqa`` directives for what each file reports (Python files; not notebooks)."""
    from ampfix.noqa import add_noqa
    from ampfix.source import read_source, write_atomic

    added = skipped = 0
    for result in results:
        if result.error or not result.diagnostics or not result.path.endswith((".py", ".pyi")):
            continue
        try:
            source = read_source(result.path)
            text, count, left = add_noqa(source.text, result.diagnostics)
            if count:
                write_atomic(result.path, source.encode(text))
        except SourceError as exc:
            click.echo(f"ampfix: error: {result.path}: {exc}", err=True)
            continue
        added, skipped = added + count, skipped + left
    return added, skipped


class _Configurations:
    """The settings of each file: those of its nearest configuration (or of ``--config``, or none
    with ``--isolated``), built once per configuration with the command line on top."""

    def __init__(self, overrides: CliOverrides, isolated: bool, config_file: Optional[str]):
        self.overrides = overrides
        self._fixed: Optional[Settings] = None
        self._fixed_config: Optional[FileConfig] = None
        if isolated:
            self._fixed_config = FileConfig(root=os.getcwd())
        elif config_file:
            self._fixed_config = load_config(config_file)
        self._warned: set[str] = set()
        if self._fixed_config is not None:
            self._fixed = self._build(self._fixed_config)
        self._by_folder: dict[str, Settings] = {}
        self._by_written_folder: dict[str, Settings] = {}
        self._by_config: dict[tuple, Settings] = {}

    def _build(self, config: FileConfig) -> Settings:
        """The settings of one configuration; what they warn about is said once per run."""
        settings = build_settings(config, self.overrides)
        for warning in settings.warnings:
            if warning not in self._warned:
                self._warned.add(warning)
                click.echo(f"warning: {warning}", err=True)
        return settings

    def for_path(self, path: str) -> Settings:
        if self._fixed is not None:
            return self._fixed
        return self._for_folder(_folder_of(path))

    def for_file(self, path: str) -> Settings:
        """A discovered file's settings (``for_path`` of a file), looked up by its directory as
        written: the files of one directory cost one lookup, not a stat and an ``abspath`` each."""
        if self._fixed is not None:
            return self._fixed
        directory = os.path.dirname(path)
        found = self._by_written_folder.get(directory)
        if found is None:
            found = self._by_written_folder[directory] = self._for_folder(os.path.abspath(directory or "."))
        return found

    def config_and_settings(self, path: str) -> tuple[FileConfig, Settings]:
        """The configuration ``path`` is read with, and its settings (``--show-settings``)."""
        if self._fixed_config is not None:
            return self._fixed_config, self._fixed
        folder = _folder_of(path)
        return find_config(folder), self._for_folder(folder)

    def _for_folder(self, folder: str) -> Settings:
        found = self._by_folder.get(folder)
        if found is None:
            parent = os.path.dirname(folder)
            if any(os.path.isfile(os.path.join(folder, n)) for n in CONFIG_NAMES) or parent == folder:
                config = find_config(folder)  # only where a pyproject may change the answer
                key = (config.path, config.root, config.torch_requirement)
                found = self._by_config.get(key)
                if found is None:
                    found = self._by_config[key] = self._build(config)
            else:
                found = self._for_folder(parent)
            self._by_folder[folder] = found
        return found


def _folder_of(path: str) -> str:
    return os.path.abspath(path if os.path.isdir(path) else os.path.dirname(path) or ".")


def _check_stdin(settings, mode, fmt, stdin_filename, force_exclude, statistics, quiet, exit_zero) -> int:
    data = sys.stdin.buffer.read()
    path = stdin_filename or "-"
    if force_exclude and stdin_filename:
        from ampfix.discovery import _Ignorer

        if _Ignorer(settings).excluded(stdin_filename, False):
            if mode == FIX:
                sys.stdout.buffer.write(data)
            return 0
    from ampfix.engine import FixError, check_source, fix_source

    try:
        source = SourceText.decode(data)
        document = _StdinDocument(path, source.text)
    except SourceError as exc:
        click.echo(f"ampfix: error: {path}: {exc}", err=True)
        return 2
    out = _text_stream(sys.stdout)
    if mode == CHECK:
        remaining = document.located(check_source(document.program, path, settings), source.text)
        _emit(out, remaining, settings.unsafe_fixes, fmt, statistics, document.sources(source.text), use_colour(out))
        if fmt in ("text", "concise") and not quiet:
            out.write(summary(remaining, 0, settings.unsafe_fixes, "check") + "\n")
        return _exit_code(remaining, False, exit_zero)
    try:
        result = fix_source(document.program, path, settings)
    except FixError as exc:
        click.echo(f"ampfix: error: {path}: {exc}", err=True)
        if mode == FIX:
            sys.stdout.buffer.write(data)
        return 2
    fixed_text = document.render(result.source) if result.changed else source.text
    if mode == DIFF:
        if result.changed:
            out.write(_diff(path, source.text, fixed_text))
        if not quiet:
            click.echo(summary(result.remaining, len(result.fixed), settings.unsafe_fixes, "diff"), err=True)
        return 1 if result.changed else 0
    # --apply on stdin: stdout is exactly the fixed source; the report goes to stderr.
    sys.stdout.buffer.write(source.encode(fixed_text))
    err = _text_stream(sys.stderr)
    remaining = document.located(result.remaining, fixed_text)
    _emit(err, remaining, settings.unsafe_fixes, fmt, statistics, document.sources(fixed_text))
    if not quiet:
        err.write(summary(remaining, len(result.fixed), settings.unsafe_fixes, "fix") + "\n")
    return _exit_code(remaining, False, exit_zero)


class _StdinDocument:
    """What stdin holds: Python, or a notebook (``--stdin-filename nb.ipynb``) whose code cells are
    checked as one program, with positions per cell."""

    def __init__(self, path: str, text: str):
        self.path = path
        self.notebook = None
        if path.endswith(".ipynb"):
            from ampfix.notebook import Notebook

            self.notebook = Notebook.parse(text)
        self.program = self.notebook.program if self.notebook is not None else text

    def render(self, program: str) -> str:
        return self.notebook.render(program) if self.notebook is not None else program

    def located(self, diagnostics: list, text: str) -> list:
        """Diagnostics of the program behind ``text``, positioned per cell for a notebook."""
        if self.notebook is not None:
            from ampfix.notebook import Notebook

            cells = self.notebook if text == self.notebook.text else Notebook.parse(text)  # the fixed one
            for diag in diagnostics:
                cells.locate(diag)
        return diagnostics

    def sources(self, text: str) -> SourceCache:
        return SourceCache() if self.notebook is not None else SourceCache({self.path: text})


def _diff(path: str, before: str, after: str) -> str:
    """The diff a fix makes: per code cell for a notebook, of the file otherwise."""
    if path.endswith(".ipynb"):
        from ampfix.notebook import cell_diff

        return cell_diff(path, before, after)
    return unified_diff(path, before, after)


def _emit(out, diagnostics, unsafe_fixes, fmt, statistics, sources, colour=False, show_fixes=False) -> None:
    if statistics:
        write_statistics(out, diagnostics, unsafe_fixes, fmt)
    elif fmt in WRITERS:
        WRITERS[fmt](out, diagnostics)
    else:
        write_text(out, diagnostics, unsafe_fixes, sources, concise=fmt == "concise", colour=colour, show_fixes=show_fixes)


def _exit_code(remaining, had_errors: bool, exit_zero: bool) -> int:
    if had_errors:
        return 2
    if remaining and not exit_zero:
        return 1
    return 0


class _Progress:
    def __init__(self, total: int):
        self.total, self.done = total, 0
        self.stream = sys.stderr

    def update(self, n: int) -> None:
        self.done += n
        width = 30
        filled = int(width * self.done / max(1, self.total))
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} files")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\r" + " " * 60 + "\r")
        self.stream.flush()


def _progress_bar(total: int, quiet: bool) -> Optional[_Progress]:
    """A progress bar on a terminal only: never in pipes or CI logs."""
    if quiet or total <= PROGRESS_THRESHOLD or os.environ.get("CI") or not sys.stderr.isatty():
        return None
    return _Progress(total)


@cli.command()
def server() -> None:
    """Run the Language Server on stdio (diagnostics, fixes as code actions, rule docs on hover).

    Needs the `server` extra: `pip install 'ampfix[server]'`.
    """
    try:
        from ampfix.server import serve
    except ImportError as exc:
        raise UsageFailure(f"`ampfix server` needs pygls ({exc}): pip install 'ampfix[server]'") from None
    serve()


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
def clean(paths: tuple[str, ...]) -> None:
    """Remove the result caches (`.ampfix_cache/`) in PATHS (default: here) and below, as
    `ruff clean` does."""
    import shutil

    from ampfix.cache import CACHE_DIR

    for top in paths or (".",):
        for folder, dirs, _ in os.walk(top):
            if CACHE_DIR in dirs:
                target = os.path.join(folder, CACHE_DIR)
                click.echo(f"Removing cache at: {target}")
                shutil.rmtree(target, ignore_errors=True)
            dirs[:] = [d for d in dirs if d != CACHE_DIR and not d.startswith(".git")]


@cli.command()
@click.argument("code", required=False)
@click.option("--all", "show_all", is_flag=True, help="List every rule with its fix safety.")
@click.option("--output-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
def rule(code: Optional[str], show_all: bool, output_format: str) -> None:
    """Print the documentation of rule CODE, or list all rules."""
    if output_format == "json":
        chosen = list(RULES.values()) if show_all or not code else [RULES.get(code.upper())]
        if chosen == [None]:
            raise UsageFailure(f"unknown rule code `{code}` (see `ampfix rule --all`)")
        rows = [
            {"code": r.code, "name": r.name, "summary": r.summary, "fix": r.fix_safety,
             "stability": r.stability, "opportunity": r.opportunity,
             "level": level_of(r.code), "explanation": rule_doc(r.code)}
            for r in chosen
        ]
        import json

        click.echo(json.dumps(rows if show_all or not code else rows[0], indent=2))
        return
    if show_all or not code:
        rows = [(r.code, r.name, _tier(r), r.fix_safety, r.summary) for r in RULES.values()]
        width = max(len(r.name) for r in RULES.values()) + 2  # the longest name still has a gap
        click.echo(f"{'code':<8}{'name':<{width}}{'tier':<21}{'fix':<11}summary")
        for row in rows:
            click.echo(f"{row[0]:<8}{row[1]:<{width}}{row[2]:<21}{row[3]:<11}{row[4]}")
        return
    rule_obj = RULES.get(code.upper())
    if rule_obj is None:
        raise UsageFailure(f"unknown rule code `{code}` (see `ampfix rule --all`)")
    doc = rule_doc(rule_obj.code)
    if doc is None:
        raise UsageFailure(f"no documentation found for {rule_obj.code}")
    title, _, body = doc.rstrip("\n").partition("\n")
    click.echo(title)
    click.echo(f"\n{_tier_sentence(rule_obj)}")
    click.echo(body)


def _tier(rule) -> str:
    """``stable``, ``preview``, with ``opportunity`` for a rule only an exact selection runs."""
    return f"{rule.stability} opportunity" if rule.opportunity else rule.stability


def _tier_sentence(rule) -> str:
    if rule.opportunity:
        tier = "stable" if rule.stability == STABLE else "in preview (not yet stable)"
        return (
            f"This rule is {tier} and an opportunity, not a bug: it runs only when selected by its code "
            f"(`--select {rule.code}`), which is the opt-in (no `--preview` needed)."
        )
    if rule.stability == STABLE:
        return "This rule is stable."
    return "This rule is in preview and is not stable. The `--preview` flag is required for use."


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.option("--steps", type=click.IntRange(min=1), default=20, show_default=True,
              help="Training steps to observe (one step: one round of optimizer steps).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(["auto", "float16", "bfloat16"]), default="auto", show_default=True)
@click.option("--against", type=click.Path(exists=True, dir_okay=False), help="SCRIPT is a rewrite you made of this original.")
@click.option("--tolerance", type=float, default=None,
              help="Relative agreement asked of every step [default: 4 rounding units of the dtype × √step].")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds each run may take.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch threads per run (pinned).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--cwd", type=click.Path(exists=True, file_okay=False), help="Working directory of the runs [default: the current one].")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--show-diff", is_flag=True, help="Print the rewrite that is run, as a diff.")
@click.option("--keep-workdir", is_flag=True, help="Keep the rewrite's folder, the traces and the runs' stderr.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write loss curves and the loss scale to this image (the `plot` extra).")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes per run, under torchrun (a DDP script: gloo on a CPU, nccl on GPUs, as it chooses).")
@click.option("--cuda-shim", is_flag=True, help="Run a CUDA-only script on the CPU (best effort).")
@click.option("--no-flops", is_flag=True, help="Do not count FLOPs by dtype (skips the low-precision check).")
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
def verify(script, steps, device, dtype, against, tolerance, timeout, threads, seed, cwd, fmt, show_diff, keep_workdir,
           plot_path, nproc, cuda_shim, no_flops, script_args):
    """Run SCRIPT and its AMP rewrite and prove the rewrite, with numbers.

    Rewrites SCRIPT and the modules of its folder it imports with every ampfix fix (unsafe ones
    included), then runs three processes under a harness: the original, the rewrite with AMP,
    and the rewrite with autocast and GradScaler forced off (its fp32 reference). Per training
    step it compares the loss the criterion returned and a digest of the parameters: that low
    precision is really used, that the AMP run trains like the fp32 one, that the scaler
    protocol holds, and how the rewrite's behaviour compares with the original's.

    SCRIPT runs as a program, as you would start it: only in subprocesses, from the current
    directory (or --cwd), the rewrite from a temporary mirror of the script's folder, with a
    timeout; when one run fails the next ones do not start. Arguments after `--` go to the
    script. Exit codes: 0 pass, 1 fail, 2 could not run (nothing to verify, too few steps).
    """
    from ampfix.verify import checks as verify_checks
    from ampfix.verify import report as verify_report
    from ampfix.verify.runner import VerifyError, VerifyOptions, prepare, run_all

    options = VerifyOptions(
        steps=steps, device=device, dtype=dtype, against=against, tolerance=tolerance, timeout=timeout,
        threads=threads, seed=seed, script_args=[a for a in script_args if a != "--"], cuda_shim=cuda_shim,
        count_flops=not no_flops, cwd=cwd, keep_workdir=keep_workdir, nproc=nproc,
    )
    if plot_path:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageFailure("--plot needs matplotlib: pip install 'ampfix[plot]'") from None
    try:
        prepared = prepare(script, options)
    except VerifyError as exc:
        raise UsageFailure(str(exc)) from None
    interactive = sys.stderr.isatty() and not os.environ.get("CI")

    def progress(mode: str, step: int, elapsed: float) -> None:
        if interactive:
            sys.stderr.write(f"\rrunning {mode:<8} step {step}/{steps}  {elapsed:5.1f} s ")
            sys.stderr.flush()

    traces, workdir = run_all(script, prepared, options, progress)
    if interactive:
        sys.stderr.write("\r" + " " * 50 + "\r")
    verdict = verify_checks.evaluate(traces, prepared.intended, steps, tolerance, against=bool(against))
    out = _text_stream(sys.stdout)
    if fmt == "json":
        verify_report.write_json(out, script, prepared, options, verdict, traces)
    else:
        verify_report.write_text(out, script, prepared, options, verdict, show_diff=show_diff, workdir=workdir)
    if plot_path:
        verify_report.write_plot(plot_path, script, verdict, traces)
    sys.exit(verdict.exit_code)


def main(argv: Optional[list[str]] = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in args), None)
    if first is None or (first not in COMMANDS and first not in ("-h", "--help", "-V", "--version")):
        args.insert(0, "check")
    try:
        code = cli.main(args=args, prog_name="ampfix", standalone_mode=False)
    except click.ClickException as exc:
        # one style for every usage problem (click's own included): one line, exit 2
        click.echo(f"ampfix: error: {exc.format_message()}", err=True)
        sys.exit(2 if isinstance(exc, (click.UsageError, UsageFailure)) else exc.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("ampfix: interrupted", err=True)
        sys.exit(130)
    sys.exit(code or 0)
