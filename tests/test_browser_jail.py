"""A jailed cell cannot script the user's page: in a real JupyterLab (Debian's Chromium,
driven by Playwright), every route by which a `%%isolate --jail` cell's output could run
script — Javascript, <script>, event handlers, javascript: links, SVG, markdown, LaTeX,
update_display, its value, its error, its stream — leaves the page untouched, while the
same tricks from a trusted `%%isolate` do run (so the check can fail). A failing test
leaves a screenshot in ``browser-failures/``."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest
from browser import CHROMIUM, CHROMIUM_ARGS, JupyterLabServer, LabPage
from conftest import REPO, wait_for
from playwright.sync_api import Browser, Page, sync_playwright

SCREENSHOTS = REPO / "browser-failures"
#: Each line tries one route; each route sets its own marker on window if script runs.
JAILED = r"""%%isolate --jail --timeout 30
from IPython.display import HTML, SVG, Javascript, Latex, Markdown, display
display(Javascript("window.__jail_javascript = 1"))
display(HTML("<script>window.__jail_script = 1</script>"))
display(HTML('<img src="x" onerror="window.__jail_onerror = 1">'))
display(HTML('<svg><image href="x" onerror="window.__jail_svg_html = 1"/></svg>'))
display(HTML('<details open ontoggle="window.__jail_ontoggle = 1">d</details>'))
display(HTML('<a href="javascript:window.__jail_href = 1">a javascript: link</a>'))
display(HTML(r'<p>$\href{javascript:window.__jail_tex_html = 1}{tex in html}$</p>'))
display(SVG('<svg xmlns="http://www.w3.org/2000/svg" onload="window.__jail_svg_onload = 1">'
            '<script>window.__jail_svg_script = 1</script><rect width="9" height="9"/></svg>'))
display(Markdown('<img src="x" onerror="window.__jail_markdown = 1"> '
                 '[md link](javascript:window.__jail_md_link=1)'))
display(Latex(r'$\href{javascript:window.__jail_latex = 1}{latex}$'))
display({"text/html": '<iframe srcdoc="<script>parent.__jail_iframe = 1</script>"></iframe>'},
        raw=True, metadata={"isolated": True})
handle = display(HTML("<b>first</b>"), display_id=True)
handle.update(Javascript("window.__jail_update = 1"))
print("\x1b[31mred\x1b[0m \x1b]8;;javascript:window.__jail_osc8=1\x1b\\osc8\x1b]8;;\x1b\\ "
      "javascript:window.__jail_text=1 <img src=x onerror=window.__jail_stream=1>")
"""
#: Its value: a class of the cell's own, whose every representation is script.
JAILED_VALUE = r"""%%isolate --jail
class Value:
    def _repr_html_(self):
        return '<img src="x" onerror="window.__jail_value = 1"><i>the value</i>'
    def _repr_javascript_(self):
        return "window.__jail_value_js = 1"
Value()
"""
JAILED_ERROR = """%%isolate --jail
raise ValueError('<img src="x" onerror="window.__jail_error = 1">')
"""
#: The same tricks from a trusted cell run: the page and the check are live.
TRUSTED = """%%isolate --pid
from IPython.display import HTML, Javascript, display
display(Javascript("window.__trusted_javascript = 1"))
display(HTML('<img src="x" onerror="window.__trusted_onerror = 1">'))
display(HTML("<script>window.__trusted_script = 1</script>"))
"""
MARKERS = "prefix => Object.keys(window).filter(name => name.startsWith(prefix)).sort()"


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLabServer]:
    server = JupyterLabServer(tmp_path_factory.mktemp("jail-root"),
                              tmp_path_factory.mktemp("jail-state"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert os.access(CHROMIUM, os.X_OK), (
        f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, jupyterlab: JupyterLabServer,
         request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh page; on failure its screenshot is kept. Kernels it started are shut down."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    try:
        yield opened
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            SCREENSHOTS.mkdir(exist_ok=True)
            name = re.sub(r"[^\w.-]+", "_", request.node.name)
            opened.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
        context.close()
        jupyterlab.shut_down_kernels()


def test_a_jailed_cell_runs_no_script_in_the_page(page, jupyterlab):
    lab = LabPage(page, jupyterlab)
    lab.new_notebook("Isolated Python")
    title = page.title()
    jailed = lab.run_in_new_cell(JAILED)
    value = lab.run_in_new_cell(JAILED_VALUE)
    error = lab.run_in_new_cell(JAILED_ERROR)
    trusted = lab.run_in_new_cell(TRUSTED)
    # The trusted cell's scripts run: whatever the jailed cells' would do has had its chance.
    assert wait_for(lambda: len(page.evaluate(MARKERS, "__trusted")) == 3, timeout=30), (
        page.evaluate(MARKERS, "__trusted"))
    # Whatever links the jailed outputs have, followed as a person would.
    for cell in (jailed, value, error):
        links = cell.locator(".jp-OutputArea-output a")
        for index in range(links.count()):
            links.nth(index).click(no_wait_after=True)
    page.wait_for_timeout(1000)
    assert page.evaluate(MARKERS, "__jail") == []
    assert page.title() == title
    assert len(page.context.pages) == 1  # no link opened anything
    assert any("a javascript: link" in text for text in lab.outputs(jailed))
    assert lab.outputs(value) == ["the value"]
    assert 'onerror="window.__jail_error = 1"' in " ".join(lab.outputs(error))  # as text
    assert len(lab.outputs(trusted)) >= 1


def test_a_jailed_svg_and_picture_still_show(page, jupyterlab):
    lab = LabPage(page, jupyterlab)
    lab.new_notebook("Isolated Python")
    cell = lab.run_in_new_cell(
        "%%isolate --jail\n"
        "from IPython.display import SVG, HTML, display\n"
        "display(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"40\" height=\"20\">"
        "<rect width=\"40\" height=\"20\" fill=\"teal\"/></svg>'))\n"
        "display(HTML('<table><tr><th>name</th><td><b>jail</b></td></tr></table>'))\n")
    image = cell.locator(".jp-OutputArea-output img").first
    image.wait_for()
    assert page.evaluate("i => i.complete && i.naturalWidth === 40", image.element_handle())
    assert cell.locator(".jp-OutputArea-output table b", has_text="jail").count() == 1
