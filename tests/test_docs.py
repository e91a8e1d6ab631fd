"""The documentation says what the code does: the generated reference is current, every command
line shown parses against the real CLI, every config named validates, every figure has a source.

Quick (no model is trained, no command runs); the site itself is built by .ci/run
(`mkdocs build --strict`), which also checks every link and anchor.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import shlex
import unicodedata
from pathlib import Path

import pytest
import typer

from s2s.cli import app
from s2s.config import load_config

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RESULTS = REPO / "BENCHMARKS.md"
GUIDES = sorted((REPO / "docs").rglob("*.md"))
# the pages whose commands must run as written (the notebook keeps history as it was)
PAGES = [README, RESULTS, *GUIDES]

DEMO_COMMAND = (
    "python3 -m pip install torch==2.13.0 && python3 -m pip install -e . && s2s demo-data && "
    "s2s prepare configs/demo.yaml && s2s train configs/demo.yaml && s2s evaluate "
    "configs/demo.yaml && printf 'The old dog sees a small cat.\\nA happy woman buys the new car "
    "near the house.\\n' | s2s translate configs/demo.yaml")
TEST_COMMAND = ('python3 -m pip install torch==2.13.0 && python3 -m pip install -e ".[test]" && '
                "python3 -m pytest -q")


def _load_reference_module():
    spec = importlib.util.spec_from_file_location("docs_reference", REPO / "docs" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _code_blocks(path: Path, languages: tuple[str, ...]) -> list[str]:
    """The fenced code blocks of ``path`` in one of ``languages``."""
    blocks, current, inside = [], [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if inside is None and stripped.startswith("```"):
            inside = stripped[3:].strip()
            current = []
        elif inside is not None and stripped.startswith("```"):
            if inside in languages:
                blocks.append("\n".join(current))
            inside = None
        elif inside is not None:
            current.append(line)
    return blocks


def _command_lines(block: str) -> list[str]:
    """The shell lines of a bash block: backslash continuations joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = []
    for line in joined.splitlines():
        # 2>&1 and the like would split into a stray word; drop them before tokenising
        line = re.sub(r"\s\d?>&\d", " ", line)
        if line.strip() and not line.strip().startswith("#"):
            lines.append(line)
    return lines


def s2s_invocations(block: str) -> list[list[str]]:
    """Every s2s command in a bash block (``s2s ...`` or ``python3 -m s2s ...``, also after
    ``torchrun ... -m s2s``), as its arguments after ``s2s``, with redirections removed."""
    found = []
    for line in _command_lines(block):
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        segments, words = [], []
        tokens = list(lexer)
        skip_next = False
        for token in tokens:
            if skip_next:
                skip_next = False
            elif token in ("&&", "||", "|", ";", "&"):
                segments.append(words)
                words = []
            elif token in ("<", ">", ">>"):
                skip_next = True  # the redirection's file
            else:
                words.append(token)
        segments.append(words)
        for words in segments:
            if "s2s" in words:
                start = words.index("s2s")
                if start == 0 or words[start - 1] == "-m" or "=" in words[0] or words[0] in (
                        "taskset", "/usr/bin/time", "nice"):
                    found.append(words[start + 1:])
    return found


def parse_with_cli(args: list[str]) -> None:
    """Parse ``s2s ARGS`` with the real click command, running nothing."""
    group = typer.main.get_command(app)
    assert args, "s2s without a command"
    name, rest = args[0], args[1:]
    command = group.commands.get(name)
    assert command is not None, f"s2s {name}: no such command (have {sorted(group.commands)})"
    parent = group.context_class(group, info_name="s2s")
    command.make_context(name, list(rest), parent=parent)


def _all_invocations() -> list[tuple[str, list[str]]]:
    return [(f"{page.relative_to(REPO)}: s2s {' '.join(args)}", args)
            for page in PAGES for block in _code_blocks(page, ("bash", "sh"))
            for args in s2s_invocations(block)]


def slug(heading: str) -> str:
    """A heading's anchor as Python-Markdown (the site) and GitHub both make it, for the
    ASCII headings the docs link to."""
    text = unicodedata.normalize("NFKD", heading.replace("`", ""))
    text = re.sub(r"[^\w\s-]", "", text.encode("ascii", "ignore").decode()).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {slug(match) for match in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


# --- the reference --------------------------------------------------------------------------

def test_the_generated_reference_is_up_to_date() -> None:
    reference = _load_reference_module()
    for name, text in reference.render_all().items():
        committed = REPO / "docs" / "reference" / name
        assert committed.is_file() and committed.read_text(encoding="utf-8") == text, (
            f"docs/reference/{name} is out of date with the code: run python3 docs/reference.py")


def test_every_config_key_has_its_meaning_type_default_and_range() -> None:
    from s2s.config import TrainConfig
    page = _load_reference_module().render_config()
    assert "| `train.lr` | number | `0.001` | > 0 | peak learning rate |" in page
    assert "`decode.precision` | choice | `auto` | `auto`, `fp32`, `bf16`, `int8` |" in page
    assert "| `data.test_references` | list of paths | `[]` |" in page
    for name in ("bleu_lowercase", "tokenized_bleu"):
        assert f"`decode.{name}`" in page
    assert f"`train.{list(TrainConfig.__dataclass_fields__)[-1]}`" in page


def test_comments_above_and_beside_a_field_are_its_meaning() -> None:
    source = ("class A:\n    # what a is,\n    # on two lines\n    a: int = 1  # and beside\n\n"
              "    b: int = 2\n    # not c's\n\n    c: int = 3\n")
    comments = _load_reference_module().field_comments(source)
    assert comments[("A", "a")] == "what a is, on two lines and beside"
    assert comments[("A", "b")] == ""
    assert comments[("A", "c")] == ""


def test_every_command_and_option_is_in_the_command_reference() -> None:
    page = (REPO / "docs" / "reference" / "cli.md").read_text(encoding="utf-8")
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        assert f"## `s2s {name}`" in page
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                assert f"`{param.opts[0]}`" in page, f"s2s {name} {param.opts[0]}"


# --- commands and configs -------------------------------------------------------------------

def test_the_readme_keeps_its_two_commands_exactly() -> None:
    readme = README.read_text(encoding="utf-8")
    blocks = _code_blocks(README, ("bash",))
    assert DEMO_COMMAND in blocks and TEST_COMMAND in blocks
    assert readme.index(DEMO_COMMAND) < readme.index(TEST_COMMAND)
    assert TEST_COMMAND in (REPO / ".ci" / "run").read_text(encoding="utf-8")


@pytest.mark.parametrize("where, args", _all_invocations(), ids=lambda value: (
    value if isinstance(value, str) else None))
def test_every_command_line_in_the_docs_parses(where: str, args: list[str]) -> None:
    parse_with_cli(args)


def test_the_command_parser_finds_and_rejects() -> None:
    block = ("s2s prepare a.yaml && s2s train a.yaml \\\n  --set train.lr=1e-3  # a comment\n"
             "printf 'x\\n' | python3 -m s2s translate a.yaml --beam 2 < in > out\n"
             "torchrun --nproc-per-node=2 -m s2s train a.yaml\n"
             "ONEDNN_PRIMITIVE_CACHE_CAPACITY=256 s2s train a.yaml 2>&1 | head\n")
    assert s2s_invocations(block) == [
        ["prepare", "a.yaml"], ["train", "a.yaml", "--set", "train.lr=1e-3"],
        ["translate", "a.yaml", "--beam", "2"], ["train", "a.yaml"], ["train", "a.yaml"]]
    for bad in (["translate", "a.yaml", "--beem", "2"], ["trian", "a.yaml"],
                ["serve", "--port", "many"]):
        with pytest.raises(Exception):
            parse_with_cli(bad)
    assert len(_all_invocations()) > 60  # the docs show commands, and the parser finds them


def test_every_config_the_docs_name_exists_and_validates() -> None:
    named = {name for page in PAGES
             for name in re.findall(r"configs/[\w.-]+\.yaml", page.read_text(encoding="utf-8"))}
    assert "configs/tvsub-zh-en.yaml" in named
    for name in sorted(named):
        assert (REPO / name).is_file(), f"{name} is named in the docs but does not exist"
        load_config(REPO / name)


def test_the_python_page_calls_the_real_functions() -> None:
    from s2s.config import load_config as loader
    from s2s.evaluation.evaluate import evaluate
    from s2s.translation.translator import Translator, load_translator
    functions = {"load_translator": load_translator, "evaluate": evaluate,
                 "load_config": loader, "translate": Translator.translate}
    checked = set()
    for block in _code_blocks(REPO / "docs" / "python.md", ("python",)):
        for node in ast.walk(ast.parse(block)):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", None))
            if name in functions:
                signature = inspect.signature(functions[name])
                leading = ["self"] if name == "translate" else []
                signature.bind(*leading, *node.args, **{k.arg: k.value for k in node.keywords})
                checked.add(name)
    assert checked == set(functions)


# --- pages and figures ----------------------------------------------------------------------

def test_the_readme_is_a_landing_page_and_the_results_page_is_short() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 150
    # about 400 lines, and the forty TVsub test lines a reader judges by eye
    assert len(RESULTS.read_text(encoding="utf-8").splitlines()) <= 450
    assert "## Chinese↔English at scale (TVsub)" in RESULTS.read_text(encoding="utf-8")
    recipes = (REPO / "docs" / "recipes.md").read_text(encoding="utf-8")
    assert "## English↔Chinese with your own millions of pairs" in recipes


def test_each_headline_result_links_to_its_section_of_the_results_page() -> None:
    readme = README.read_text(encoding="utf-8")
    table = readme.split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("|")][2:]
    assert 1 <= len(rows) <= 10
    sections = anchors(RESULTS)
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[2], f"a result without its machine: {row}"
        link = re.search(r"\(BENCHMARKS\.md#([\w-]+)\)", cells[3])
        assert link and link[1] in sections, f"a result without its section: {row}"


def test_every_link_between_pages_reaches_a_file_and_a_heading() -> None:
    """The same check the strict site build makes, for readers of the repository itself."""
    pages = [README, RESULTS, REPO / "benchmarks" / "NOTEBOOK.md", REPO / "data" / "README.md",
             *GUIDES]
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            assert file.exists(), f"{page.relative_to(REPO)}: {target} does not exist"
            if anchor and file.suffix == ".md":
                assert anchor in anchors(file), f"{page.relative_to(REPO)}: no #{anchor} there"


def test_every_image_the_docs_show_exists() -> None:
    shown = 0
    for page in [README, RESULTS, REPO / "benchmarks" / "NOTEBOOK.md", *GUIDES]:
        for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).is_file(), f"{page.relative_to(REPO)}: {target}"
            shown += 1
    assert shown >= 5
