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


def _chapters() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [
        entry["file"]
        for part in toc["parts"]
        for entry in part["chapters"]
        if entry["file"].startswith("chapters/")
    ]


@pytest.fixture(scope="module")
def page():
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
        # The book must read offline: anything that is not a local file is refused.
        context = browser.new_context(viewport={"width": 1280, "height": 2000})
        context.route(re.compile(r"^(?!file:).*"), lambda route: route.abort())
        yield context.new_page()
        browser.close()


def _open(page, relative: str):
    path = HTML / relative
    assert path.exists(), f"{relative} was not built"
    page.goto(path.as_uri(), wait_until="load")
    return page


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
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
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
        ("book/api.html", "fslearn.fit"),
        ("book/bibliography.html", "Jake Snell, Kevin Swersky, and Richard Zemel"),
    ],
)
def test_reference_pages_render(page, page_name, expected):
    _open(page, page_name)
    assert expected in page.locator("main").inner_text()
