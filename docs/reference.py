"""Write the reference pages from the code: docs/reference/config.md and docs/reference/cli.md.

    python3 docs/reference.py          # rewrite both pages
    python3 docs/reference.py --check  # exit 1 if a committed page is out of date

The config page comes from the dataclasses of ``s2s/config.py``: each field's type, default
and allowed values (``Literal`` choices, the ranges of ``_option``) from the classes, and its
meaning from the comment above or beside the field in the source (read with ``tokenize``), so a
setting is described where it is declared and nowhere else. The command page comes from the
Typer app through click: every command, argument and option with its help and default.

Neither page is edited by hand; ``tests/test_docs.py`` fails when one differs from what this
script writes. This script is not part of the s2s package and needs nothing beyond s2s itself.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import sys
import tokenize
import typing
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
CONFIG_SOURCE = ROOT / "s2s" / "config.py"
REFERENCE_DIR = ROOT / "docs" / "reference"
REGENERATE = "python3 docs/reference.py"


# --- the config ----------------------------------------------------------------------------

def field_comments(source: str) -> dict[tuple[str, str], str]:
    """The comment of every annotated field of every class in ``source``, keyed by (class,
    field): the comment lines directly above the field joined with the one beside it."""
    comments: dict[int, str] = {}  # line number -> comment text
    code_lines: set[int] = set()  # lines holding code, not only a comment
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                                tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.update(range(token.start[0], token.end[0] + 1))
    found = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            above = []
            line = item.lineno - 1
            while line in comments and line not in code_lines:
                above.insert(0, comments[line])
                line -= 1
            beside = [comments[line] for line in range(item.lineno, item.end_lineno + 1)
                      if line in comments]
            found[(node.name, item.target.id)] = " ".join(above + beside)
    return found


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "choice"
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        return f"list of {_type_name(item)}" + ("" if dataclasses.is_dataclass(item) else "s")
    if dataclasses.is_dataclass(hint):
        return "corpus" if hint.__name__ == "TrainingCorpus" else "section"
    return {bool: "boolean", int: "integer", float: "number", str: "string",
            Path: "path"}.get(hint, getattr(hint, "__name__", str(hint)))


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_yaml_value(item) for item in value) + "]"
    if isinstance(value, str) and value == "":
        return '""'
    return str(value)


def _default(item: dataclasses.Field) -> str:
    if item.default is not dataclasses.MISSING:
        return f"`{_yaml_value(item.default)}`"
    if item.default_factory is not dataclasses.MISSING:
        return "(section)"
    return "required"


def _allowed(hint: Any, metadata: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return ", ".join(f"`{choice}`" for choice in typing.get_args(hint))
    minimum, maximum = metadata.get("minimum"), metadata.get("maximum")
    limits = []
    if minimum is not None:
        limits.append(f"> {_number(minimum)}" if metadata.get("exclusive_minimum")
                      else f"≥ {_number(minimum)}")
    if maximum is not None:
        limits.append(f"≤ {_number(maximum)}")
    return ", ".join(limits)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace("|", "\\|")
            .replace("*", "\\*"))


def _section_rows(cls: type, prefix: str, comments: dict[tuple[str, str], str],
                  missing: list[str]) -> list[str]:
    hints = typing.get_type_hints(cls)
    rows = []
    for item in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[item.name]):
            continue  # a section: its own table
        meaning = comments.get((cls.__name__, item.name), "")
        if not meaning:
            missing.append(f"{cls.__name__}.{item.name}")
        rows.append(f"| `{prefix}{item.name}` | {_type_name(hints[item.name])} | "
                    f"{_default(item)} | {_allowed(hints[item.name], item.metadata)} | "
                    f"{_cell(meaning)} |")
    return rows


def render_config() -> str:
    """The config reference page, from the dataclasses and their comments."""
    from s2s import config

    comments = field_comments(CONFIG_SOURCE.read_text(encoding="utf-8"))
    missing: list[str] = []
    header = ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    lines = [
        "# Config reference", "",
        "<!-- Written by docs/reference.py from s2s/config.py; do not edit by hand: "
        f"run `{REGENERATE}`. -->", "",
        "One YAML file per experiment: a top-level `run_dir` and the sections `data`, `vocab`, "
        "`model`, `train` and `decode`. Every key below is a field of the dataclass named beside "
        "its section in `s2s/config.py`; its meaning is the comment written beside that field. "
        "Any key can be changed from the command line with `--set section.key=value`, checked "
        "the same way. A misspelt key, a value of the wrong type or outside its range is an "
        "error that names the file and the dotted key.", "",
        "## Top level (`Config`)", "", *header,
        *_section_rows(config.Config, "", comments, missing), "",
    ]
    hints = typing.get_type_hints(config.Config)
    for item in dataclasses.fields(config.Config):
        cls = hints[item.name]
        if not dataclasses.is_dataclass(cls):
            continue
        doc = " ".join((cls.__doc__ or "").split())
        lines += [f"## `{item.name}` (`{cls.__name__}`)", "", doc, "", *header,
                  *_section_rows(cls, f"{item.name}.", comments, missing), ""]
        if cls is config.DataConfig:
            corpus = config.TrainingCorpus
            lines += ["### Each entry of `data.train` (`TrainingCorpus`)", "",
                      " ".join((corpus.__doc__ or "").split()).replace("``", "`"), "",
                      *header, *_section_rows(corpus, "", comments, missing), ""]
    if missing:
        raise ValueError("config fields without a comment to describe them in s2s/config.py: "
                         + ", ".join(missing))
    return "\n".join(lines).rstrip() + "\n"


# --- the command line ----------------------------------------------------------------------

def _option_names(param: Any) -> str:
    names = ", ".join(f"`{name}`" for name in param.opts)
    if getattr(param, "secondary_opts", None):
        names += " / " + ", ".join(f"`{name}`" for name in param.secondary_opts)
    return names


def _param_value(param: Any) -> str:
    """What an option takes: its metavar, else its type (with a range), or nothing for a flag."""
    if getattr(param, "is_flag", False):
        return "flag"
    text = param.metavar or _param_type_name(param)
    text = " \\| ".join(f"`{part}`" for part in text.split("|"))  # hard|soft
    # click keeps a range on the parameter's type; Typer's own click on the parameter
    bounds = getattr(param, "type", param)
    limits = [f"{sign} {value}" for sign, value in
              (("≥", getattr(bounds, "min", None)), ("≤", getattr(bounds, "max", None)))
              if value is not None]
    text += f" ({', '.join(limits)})" if limits else ""
    return text + (", repeatable" if param.multiple else "")


def _param_type_name(param: Any) -> str:
    if getattr(param, "type", None) is not None:
        return param.type.name.upper()
    annotation = param.type_descriptor.annotation
    while typing.get_args(annotation):  # Optional[list[int]] -> int
        annotation = typing.get_args(annotation)[0]
    return getattr(annotation, "__name__", str(annotation)).upper()


def _param_default(param: Any) -> str:
    default = param.default
    if param.required:
        return "required"
    if default is None or default == () or default == []:
        return ""
    if isinstance(default, bool):
        return "on" if default else "off"
    return f"`{default}`"


def _command_section(name: str, command: Any, parent: Any) -> list[str]:
    context = command.context_class(command, info_name=name, parent=parent)
    usage = " ".join(command.collect_usage_pieces(context))
    lines = [f"## `s2s {name}`", "", " ".join((command.help or "").split()), "",
             "```", f"s2s {name} {usage}", "```", ""]
    # Typer may bring its own copy of click: tell parameters apart by kind, not by class
    arguments = [param for param in command.params if param.param_type_name == "argument"]
    options = [param for param in command.params
               if param.param_type_name == "option" and param.name != "help"]
    if arguments:
        lines += ["| argument | help | default |", "|---|---|---|"]
        for param in arguments:
            help_text = getattr(param, "help", "") or ""
            lines.append(f"| `{param.metavar or param.name.upper()}` | {_cell(help_text)} | "
                         f"{_param_default(param)} |")
        lines.append("")
    if options:
        lines += ["| option | takes | default | help |", "|---|---|---|---|"]
        for param in options:
            lines.append(f"| {_option_names(param)} | {_param_value(param)} | "
                         f"{_param_default(param)} | {_cell(param.help or '')} |")
        lines.append("")
    return lines


def render_cli() -> str:
    """The command reference page, from the Typer app."""
    import typer

    from s2s.cli import app

    group = typer.main.get_command(app)
    root = group.context_class(group, info_name="s2s")
    lines = [
        "# Command reference", "",
        "<!-- Written by docs/reference.py from the Typer app s2s.cli.app; do not edit by hand: "
        f"run `{REGENERATE}`. -->", "",
        " ".join((group.help or "").split()), "",
        "Every command prints `--help`. Commands that take a CONFIG also take `--set "
        "section.key=value` (repeatable), checked like the file: see the "
        "[config reference](config.md). Errors are one `error:` line on stderr; exit code 2 "
        "for bad input, 1 for runtime errors, 130/143/129 after a clean stop on "
        "SIGINT/SIGTERM/SIGHUP.", "",
        "| command | what it does |", "|---|---|",
    ]
    for name, command in group.commands.items():
        first = " ".join((command.help or "").split()).split(". ")[0].rstrip(".")
        lines.append(f"| [`s2s {name}`](#s2s-{name}) | {_cell(first)}. |")
    lines.append("")
    global_options = [param for param in group.params
                      if param.param_type_name == "option" and param.name != "help"]
    if global_options:
        lines += ["Options of `s2s` itself:", "", "| option | help |", "|---|---|"]
        lines += [f"| {_option_names(param)} | {_cell(param.help or '')} |"
                  for param in global_options]
        lines.append("")
    for name, command in group.commands.items():
        lines += _command_section(name, command, root)
    return "\n".join(lines).rstrip() + "\n"


def render_all() -> dict[str, str]:
    """Each reference page's file name and the text it should have."""
    return {"config.md": render_config(), "cli.md": render_cli()}


def main(argv: list[str]) -> int:
    pages = render_all()
    stale = [name for name, text in pages.items() if not (REFERENCE_DIR / name).is_file()
             or (REFERENCE_DIR / name).read_text(encoding="utf-8") != text]
    if "--check" in argv:
        for name in stale:
            print(f"docs/reference/{name} is out of date: run {REGENERATE}", file=sys.stderr)
        return 1 if stale else 0
    REFERENCE_DIR.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (REFERENCE_DIR / name).write_text(pages[name], encoding="utf-8")
        print(f"wrote docs/reference/{name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main(sys.argv[1:]))
