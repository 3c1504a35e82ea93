"""The built HTML book, rendered in a real (headless) Chromium.

Needs `make book` first (`make test` does it). Without a browser, or without a built
book, the tests skip and say why; under CI (CI=true) both are failures instead.
"""

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
UNDER_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(reason: str):
    if UNDER_CI:
        pytest.fail(f"{reason} (CI=true: the browser test must run)")
    pytest.skip(reason)


def _under_the_hood() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    [part] = [part for part in toc["parts"] if part["caption"] == "Under the hood"]
    return [entry["file"] for entry in part["chapters"]]


def _chapters() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [
        entry["file"]
        for part in toc["parts"]
        for entry in part["chapters"]
        if entry["file"].startswith("chapters/")
    ]


@pytest.fixture(scope="module")
def browser():
    if not (HTML / "index.html").exists():
        _unavailable(f"no built book at {HTML}: run `make book`")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        _unavailable("no chromium on PATH (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install playwright)")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


def _page(browser, width: int):
    """A page of the given width whose requests for anything but a local file are refused and
    recorded in ``page.offsite``: the book must read offline."""
    context = browser.new_context(viewport={"width": width, "height": 2000})
    page = context.new_page()
    page.offsite = []

    def refuse(route):
        page.offsite.append(route.request.url)
        route.abort()

    context.route(re.compile(r"^(?!file:).*"), refuse)
    return page


@pytest.fixture(scope="module")
def page(browser):
    return _page(browser, 1280)


@pytest.fixture(scope="module")
def phone(browser):
    return _page(browser, 400)


def _open(page, relative: str):
    path = HTML / relative
    assert path.exists(), f"{relative} was not built"
    page.offsite.clear()
    page.goto(path.as_uri(), wait_until="load")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    return page


def _open_toggles(page):
    """Open every toggle (hidden solutions, dropdowns), so that what they hold is measured."""
    page.evaluate("() => document.querySelectorAll('main details').forEach(d => d.open = true)")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")


# What a reader reads in a chapter or a reference page, box by box.
BOXES = "div.cell_input pre, div.cell_output pre, div.cell_output table, main table, dl.glossary"

# Each box wider than it shows, with whether it scrolls (CSS overflow-x of the box or of the
# box around it).
WIDE_BOXES = f"""() => Array.from(document.querySelectorAll('{BOXES}'))
  .filter(el => el.offsetParent !== null && el.scrollWidth > el.clientWidth + 1)
  .map(el => {{
    const scrolls = e => e && ['auto', 'scroll'].includes(getComputedStyle(e).overflowX);
    return {{text: el.innerText.slice(0, 60), scroll: el.scrollWidth, client: el.clientWidth,
             scrolls: scrolls(el) || scrolls(el.parentElement)}};
  }})"""


@pytest.mark.parametrize("chapter", _chapters())
def test_chapter_renders_with_figures_and_no_errors(page, chapter):
    _open(page, f"{chapter}.html")
    main = page.locator("main")
    assert page.locator("h1").first.inner_text().strip(), "the chapter has a title"
    outputs = page.locator("div.cell_output")
    assert outputs.count() > 0, "the chapter was executed: it has outputs"
    # Source code may name exceptions; what the cells printed must not show one.
    printed = "\n".join(outputs.all_inner_texts())
    assert "Traceback" not in printed
    assert not re.search(r"\b\w*(Error|Exception)\b: ", printed), printed
    assert page.locator(".output.error, .output.traceback").count() == 0
    images = page.locator("div.cell_output img")
    assert images.count() > 0, "the chapter shows figures"
    if page.locator("span.math, div.math").count():
        page.wait_for_selector("mjx-container", timeout=15_000)  # MathJax ships with the book
        assert "\\(" not in main.inner_text(), "a formula was left as raw LaTeX"
    sizes = images.evaluate_all("els => els.map(e => [e.src, e.naturalWidth, e.naturalHeight])")
    broken = [src for src, w, h in sizes if w == 0 or h == 0]
    assert not broken, f"figures that do not display: {broken}"


@pytest.mark.parametrize("chapter", _chapters())
def test_colab_button_opens_the_committed_notebook(page, chapter):
    _open(page, f"{chapter}.html")
    hrefs = page.locator("a[href*='colab.research.google.com']").evaluate_all(
        "els => els.map(e => e.href)"
    )
    assert hrefs, "the chapter has a Colab launch link"
    for href in hrefs:
        match = re.search(r"colab\.research\.google\.com/github/[^/]+/[^/]+/blob/[^/]+/(.+)$", href)
        assert match, href
        target = match.group(1)
        assert target == f"{chapter}.ipynb" and (ROOT / target).exists(), href


@pytest.mark.parametrize(
    "page_name,expected",
    [
        ("book/intro.html", "Few-shot learning that runs"),
        ("book/glossary.html", "支持集"),
        ("book/notation.html", "n_way"),
        ("book/api.html", "fslearn.fit"),
        ("book/bibliography.html", "Jake Snell, Kevin Swersky, and Richard Zemel"),
    ],
)
def test_reference_pages_render(page, page_name, expected):
    _open(page, page_name)
    assert expected in page.locator("main").inner_text()


@pytest.mark.parametrize("chapter", _chapters())
def test_chapter_fits_the_column(page, chapter):
    _open(page, f"{chapter}.html")
    _open_toggles(page)
    wide = page.evaluate(WIDE_BOXES)
    assert not wide, f"code, outputs or tables wider than the column at 1280 px: {wide}"
    # A figure drawn wider than the column is shrunk, and its lettering with it.
    shown = page.locator("div.cell_output img").evaluate_all(
        "els => els.map(e => [e.src.split('/').pop(), e.getBoundingClientRect().width,"
        " e.naturalWidth])"
    )
    shrunk = [(src, round(w), n) for src, w, n in shown if w < 0.7 * n]
    assert not shrunk, f"figures shown below 70% of their natural width (shown, natural): {shrunk}"
    assert page.offsite == [], f"the page asked for files off the book: {page.offsite}"


@pytest.mark.parametrize("chapter", _chapters())
def test_chapter_ends_with_a_summary_exercises_and_executed_solutions(page, chapter):
    _open(page, f"{chapter}.html")
    headings = [h.strip() for h in page.locator("main h2").all_inner_texts()]
    assert any(h.endswith("Summary") for h in headings), headings
    assert any(h.endswith("Exercises") for h in headings), headings
    solutions = page.locator("div.cell.tag_solution")
    assert solutions.count() > 0, "the exercises have executed solutions"
    for i in range(solutions.count()):
        assert solutions.nth(i).locator("div.cell_output").count(), f"solution {i} has no output"
        toggle = solutions.nth(i).locator("details")
        assert toggle.count() and not toggle.first.evaluate("d => d.open"), "solutions are hidden"


@pytest.mark.parametrize(
    "name", [f"{c}.html" for c in _chapters()] + ["book/glossary.html", "book/notation.html"]
)
def test_a_phone_scrolls_wide_content_inside_its_box(phone, name):
    _open(phone, name)
    _open_toggles(phone)
    page_width = phone.evaluate("() => document.documentElement.scrollWidth")
    assert page_width <= 401, f"the page itself is {page_width} px wide on a 400 px screen"
    clipped = [box for box in phone.evaluate(WIDE_BOXES) if not box["scrolls"]]
    assert not clipped, f"content clipped at 400 px instead of scrolling: {clipped}"
    assert phone.offsite == [], phone.offsite


def test_chapters_are_numbered(page):
    _open(page, "book/intro.html")
    entries = page.locator("nav.bd-links a").all_inner_texts()
    numbered = [e for e in entries if re.match(r"\d+\. ", e.strip())]
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    expected = sum(len(part["chapters"]) for part in toc["parts"] if part.get("numbered"))
    assert len(numbered) == expected, entries
    assert expected > len(_chapters()) - 1, "every chapter is in a numbered part"


@pytest.mark.parametrize("chapter", _chapters())
def test_chapter_links_its_terms_to_the_glossary(page, chapter):
    _open(page, f"{chapter}.html")
    links = page.locator("main a[href*='glossary.html#term-']")
    assert links.count() >= 3, "the chapter links the terms it introduces to the glossary"


# Checks live in collapsed cells: what shows without opening a toggle is the idea.
VISIBLE_CODE = """() => Array.from(document.querySelectorAll('main div.cell_input'))
  .filter(el => !el.closest('details'))
  .map(el => el.innerText)"""


@pytest.mark.parametrize("chapter", _chapters())
def test_no_visible_code_cell_holds_a_check(page, chapter):
    _open(page, f"{chapter}.html")
    visible = page.evaluate(VISIBLE_CODE)
    assert visible, "the chapter shows code"
    checks = [code[:80] for code in visible if re.search(r"\bassert\b|assert_close|glue\(", code)]
    assert not checks, f"visible code cells with checks in them: {checks}"
    toggles = page.locator("div.cell.tag_check details")
    assert toggles.count(), "the chapter's checks are in collapsed cells"
    for i in range(toggles.count()):
        toggle = toggles.nth(i)
        assert not toggle.evaluate("d => d.open")
        assert toggle.locator("summary").inner_text().strip().startswith("Checks")


STRAY_NUMBER = re.compile(r"^-?\d+\.\d{6,}$")


@pytest.mark.parametrize("chapter", _chapters())
def test_no_output_is_a_stray_number(page, chapter):
    _open(page, f"{chapter}.html")
    outputs = [text.strip() for text in page.locator("div.cell_output").all_inner_texts()]
    assert not [text for text in outputs if STRAY_NUMBER.match(text)]


FIGURES = """() => Array.from(document.querySelectorAll('main div.cell_output img')).map(img => {
  const figure = img.closest('figure');
  return {
    src: img.src.split('/').pop(),
    id: figure ? figure.id : null,
    number: figure ? (figure.querySelector('figcaption .caption-number') || {}).innerText : null,
    caption: figure ? (figure.querySelector('figcaption .caption-text') || {}).innerText : null,
  };
})"""


@pytest.mark.parametrize("chapter", _chapters())
def test_every_figure_is_numbered_captioned_and_referred_to(page, chapter):
    _open(page, f"{chapter}.html")
    figures = page.evaluate(FIGURES)
    assert figures
    for figure in figures:
        assert figure["number"] and re.match(r"Fig\. \d+\.\d+", figure["number"]), figure
        assert figure["caption"] and len(figure["caption"].strip()) > 10, figure
        referred = page.locator(f"main p a[href='#{figure['id']}']")
        assert referred.count(), f"the text never refers to {figure['number']} ({figure['id']})"


@pytest.mark.parametrize("chapter", _chapters())
def test_chapter_opens_with_what_it_teaches_assumes_and_takes(page, chapter):
    _open(page, f"{chapter}.html")
    box = page.locator("main div.objectives.admonition")
    assert box.count() == 1, "one objectives box"
    text = box.inner_text()
    assert "In this chapter" in text
    assert "You will learn" in text and "You should know" in text and "Time" in text
    first_section = page.locator("main section section").first
    assert box.evaluate(
        "(b, s) => !!(b.compareDocumentPosition(s) & Node.DOCUMENT_POSITION_FOLLOWING)",
        first_section.element_handle(),
    ), "the box comes before the first section"


EXERCISES = """() => Array.from(document.querySelectorAll('main div.exercise.admonition'))
.map(ex => {
  const title = ex.querySelector('.admonition-title').innerText.trim();
  const next = ex.nextElementSibling;
  const summary = next && next.matches('div.cell.tag_solution')
    ? next.querySelector('summary').innerText.trim() : null;
  return {title, summary};
})"""


@pytest.mark.parametrize("chapter", _chapters())
def test_each_exercise_has_its_own_solution_toggle_under_it(page, chapter):
    _open(page, f"{chapter}.html")
    exercises = page.evaluate(EXERCISES)
    assert exercises, "the chapter has exercises"
    for number, exercise in enumerate(exercises, start=1):
        assert exercise["title"] == f"Exercise {number}", exercise
        assert exercise["summary"], f"{exercise['title']} is not followed by its solution"
        assert exercise["summary"].startswith(f"Solution {number}"), exercise
    labels = page.locator("div.cell.tag_solution summary").all_inner_texts()
    numbers = {int(m.group(1)) for label in labels if (m := re.match(r"Solution (\d+)", label))}
    assert len(numbers) == len(exercises) and all(re.match(r"Solution \d+", t) for t in labels)


def _svg_font_sizes(path: Path) -> list[float]:
    """The sizes (in the SVG's own units) of the text matplotlib drew as paths: each glyph run
    is scaled from matplotlib's 100-unit outlines."""
    text = path.read_text()
    return [100 * float(s) for s in re.findall(r"scale\((0\.\d+)[ ,]+-?0\.\d+\)", text)]


@pytest.mark.parametrize("chapter", _chapters())
def test_figure_text_is_legible_on_a_phone(phone, chapter):
    _open(phone, f"{chapter}.html")
    shown = phone.locator("main div.cell_output img").evaluate_all(
        "els => els.map(e => [e.getAttribute('src'), e.getBoundingClientRect().width])"
    )
    small = []
    for src, width in shown:
        if not src.endswith(".svg"):
            continue
        path = (HTML / chapter).parent / src
        view_box = re.search(r'viewBox="0 0 ([\d.]+) ', path.read_text())
        sizes = _svg_font_sizes(path)
        if not (view_box and sizes):
            continue
        px = min(sizes) * width / float(view_box.group(1))
        if px < 9:
            small.append((src.split("/")[-1], round(px, 1)))
    assert not small, f"figure text under 9 CSS px at 400 px (figure, smallest text): {small}"


SCROLLERS = """() => Array.from(document.querySelectorAll('main div.cell_output table, main table'))
  .filter(el => el.offsetParent !== null && el.scrollWidth > el.clientWidth + 1)
  .map(el => ({text: el.innerText.slice(0, 40),
               cue: getComputedStyle(el).backgroundImage.includes('gradient')}))"""


@pytest.mark.parametrize("chapter", _chapters())
def test_a_table_that_scrolls_on_a_phone_shows_a_cue(phone, chapter):
    _open(phone, f"{chapter}.html")
    assert not [t for t in phone.evaluate(SCROLLERS) if not t["cue"]]


def test_under_the_hood_holds_the_engineering_and_the_concepts_none():
    hood = set(_under_the_hood())
    assert {"chapters/10_maml_at_speed", "chapters/11_scaling_out"} <= hood
    words = re.compile(r"gpu-check|maml_speed\.json|recorded_maml_speed|provenance|not recorded")
    for chapter in set(_chapters()) - hood:
        source = (ROOT / f"{chapter}.md").read_text()
        assert not words.findall(source), f"{chapter}: {sorted(set(words.findall(source)))}"


def test_the_glossary_shows_its_chinese_terms_with_the_book_s_own_font(page):
    _open(page, "book/glossary.html")
    page.evaluate("document.fonts.ready")
    loaded = page.evaluate(
        "() => Array.from(document.fonts).filter(f => f.family.includes('fslearn CJK'))"
        ".map(f => f.status)"
    )
    assert "loaded" in loaded, f"the CJK subset did not load: {loaded}"
