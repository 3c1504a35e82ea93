"""Every chapter is a Jupytext pair: the .md people edit and the .ipynb Colab opens."""

import re
from pathlib import Path

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.md"))


def test_there_are_chapters():
    assert len(CHAPTERS) >= 2


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_pair_is_in_sync(md):
    ipynb = md.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing: run `make sync`"
    text, notebook = jupytext.read(md), jupytext.read(ipynb)
    cells = lambda nb: [(c.cell_type, c.source.strip()) for c in nb.cells]  # noqa: E731
    assert cells(notebook) == cells(text), f"{md.name} and {ipynb.name} differ: run `make sync`"
    assert notebook.metadata["jupytext"]["formats"] == "ipynb,md:myst"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_committed_notebook_has_no_outputs(md):
    notebook = jupytext.read(md.with_suffix(".ipynb"))
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_first_code_cell_installs_fslearn_only_in_colab(md):
    first = next(c for c in jupytext.read(md).cells if c.cell_type == "code")
    assert '"google.colab" in sys.modules' in first.source
    assert "pip" in first.source and "git+https://github.com/fslearn/fslearn" in first.source
    assert "torch" not in first.source and "numpy" not in first.source  # Colab has its own


def test_every_chapter_is_in_the_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text()
    files = {entry["file"] for part in yaml.safe_load(toc)["parts"] for entry in part["chapters"]}
    assert {f"chapters/{md.stem}" for md in CHAPTERS} <= files


#: The characters of code the book's column shows at 1280 px without scrolling.
COLUMN = 78


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_code_fits_the_column(md):
    wide = [
        f"{md.name}, cell {i}: {line!r} ({len(line)} characters)"
        for i, cell in enumerate(jupytext.read(md).cells)
        if cell.cell_type == "code"
        for line in cell.source.splitlines()
        if len(line) > COLUMN
    ]
    assert not wide, f"{len(wide)} code lines wider than the column:\n" + "\n".join(wide[:10])


STATIC_SOLUTION = re.compile(r"\{admonition\} Solution.*?```(python|\{code-block\} python)", re.S)


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_solutions_are_executed_hidden_cells(md):
    cells = jupytext.read(md).cells
    solutions = [c for c in cells if "solution" in c.metadata.get("tags", [])]
    assert solutions, f"{md.name} has no executed solution cells (tags: hide-cell, solution)"
    for cell in solutions:
        assert cell.cell_type == "code" and "hide-cell" in cell.metadata["tags"], cell.source
    # A solution written as a static code block in the prose is never run, nor are its numbers.
    static = [
        c.source[:60]
        for c in cells
        if c.cell_type == "markdown" and STATIC_SOLUTION.search(c.source)
    ]
    assert not static, f"{md.name}: solutions still shown as static code: {static}"


def test_the_shipped_cjk_font_has_every_cjk_character_the_pages_use():
    from fontTools.ttLib import TTFont

    font = TTFont(ROOT / "book" / "_static" / "fonts" / "NotoSansSC-fslearn.woff")
    covered = set(font.getBestCmap())
    pages = sorted((ROOT / "book").glob("*.md")) + CHAPTERS
    used = {
        (char, page.name)
        for page in pages
        for char in page.read_text()
        if 0x2E80 <= ord(char) <= 0x9FFF or 0xFF00 <= ord(char) <= 0xFFEF
    }
    missing = sorted({f"{char} ({name})" for char, name in used if ord(char) not in covered})
    assert not missing, (
        f"characters the font subset lacks: {missing[:20]}; remake it as CONTRIBUTING.md says"
    )
