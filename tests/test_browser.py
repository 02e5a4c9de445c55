"""JupyterLab in a real browser (Debian's Chromium, driven by Playwright), as a user sees it:
the launcher, the tutorial notebooks run with Run All, a new notebook with a lab and its
picture, the toolbar's interrupt and Restart kernel. A failing test leaves a screenshot in
``browser-failures/`` at the top of the repository."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator

import pytest
from browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    JupyterLabServer,
    LabPage,
    copy_notebooks,
    label_overlaps,
)
from conftest import IS_ROOT, REPO, ROOT_ONLY_NOTEBOOKS, _descends_from, our_processes, wait_for
from playwright.sync_api import Browser, Page, sync_playwright

NOTEBOOKS = [pytest.param(name, marks=pytest.mark.skipif(
                 not IS_ROOT, reason=ROOT_ONLY_NOTEBOOKS[name]))
             if name in ROOT_ONLY_NOTEBOOKS else name
             for name in sorted(path.name for path in (REPO / "notebooks").glob("*.ipynb"))]
SCREENSHOTS = REPO / "browser-failures"


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLabServer]:
    root, state = tmp_path_factory.mktemp("lab-root"), tmp_path_factory.mktemp("lab-state")
    copy_notebooks(REPO / "notebooks", root)
    server = JupyterLabServer(root, state)
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


def test_the_launcher_shows_isolated_python_with_its_logo(page, jupyterlab):
    lab = LabPage(page, jupyterlab)
    card = lab.launcher_card("Isolated Python")
    assert card.count() == 1
    logo = card.locator(".jp-LauncherCard-icon img")
    assert "/kernelspecs/isolated-python/logo" in (logo.get_attribute("src") or "")
    assert page.evaluate("i => i.complete && i.naturalWidth > 0", logo.element_handle())
    assert card.locator(".jp-LauncherCard-label").inner_text() == "Isolated Python"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_a_tutorial_notebook_runs_with_run_all(page, jupyterlab, name):
    lab = LabPage(page, jupyterlab)
    lab.open_from_file_browser(name)
    lab.menu("Run", "Run All Cells")
    lab.wait_for_cells_to_run(lab.code_cells(), timeout=240)
    lab.wait_for_kernel_idle()
    lab.menu("File", "Save Notebook")
    saved = wait_for(lambda: not page.locator(".jp-mod-dirty").count(), timeout=30)
    assert saved, "the notebook was not saved"
    notebook = json.loads((jupyterlab.root / name).read_text())
    # The exercises' cells for the learner are empty: JupyterLab runs nothing there.
    code = [cell for cell in notebook["cells"]
            if cell["cell_type"] == "code" and "".join(cell["source"]).strip()]
    assert all(cell["execution_count"] for cell in code), "Run All stopped before the end"
    # a cell tagged raises-exception (as nbval reads it) shows the error it is there to show
    expected = [cell for cell in code if "raises-exception" in cell["metadata"].get("tags", [])]
    errors = [(cell["source"], output) for cell in code for output in cell["outputs"]
              if (output["output_type"] == "error" or output.get("name") == "stderr")
              and cell not in expected]
    assert not errors, errors
    shown = sum(output["output_type"] == "error" or output.get("name") == "stderr"
                for cell in expected for output in cell["outputs"])
    assert page.locator(".jp-OutputArea-output[data-mime-type="
                        "'application/vnd.jupyter.stderr']").count() == shown


def test_a_new_notebook_builds_a_lab_and_shows_its_picture(page, jupyterlab):
    lab = LabPage(page, jupyterlab)
    lab.new_notebook("Isolated Python")
    cell = lab.run_in_new_cell("%%isolate --pid --net\nimport os\nprint(os.getpid())")
    assert lab.outputs(cell) == ["1\n"] or lab.outputs(cell) == ["1"]
    lab.run_in_new_cell("%netns add red blue\n"
                        "%veth red:10.0.0.1/24 blue:10.0.0.2/24")
    ping = lab.run_in_new_cell("%ping red 10.0.0.2 -c 2")
    assert "ping 10.0.0.2 from red: 2/2 replies" in " ".join(lab.outputs(ping))
    picture = lab.picture(lab.run_in_new_cell("%topology"))
    assert picture.startswith("<svg") and 'data-name="red"' in picture
    assert ">red<" in picture and ">blue<" in picture and "10.0.0.2/24" in picture
    assert label_overlaps(page, picture) == []


def test_the_tutorial_pictures_have_no_overlapping_labels_in_the_browser(page):
    """The saved pictures, measured with the browser's own fonts (the unit tests work out
    the label boxes from a character width)."""
    pictures = []
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            for output in cell.get("outputs", []):
                if "image/svg+xml" in output.get("data", {}):
                    pictures.append("".join(output["data"]["image/svg+xml"]))
    assert len(pictures) >= 2
    for picture in pictures:
        assert label_overlaps(page, picture) == []


def test_a_saved_picture_shows_when_a_notebook_is_opened(page, jupyterlab):
    """On a fresh machine the shipped notebooks are not trusted: the picture still shows."""
    lab = LabPage(page, jupyterlab)
    lab.open_from_file_browser("07-network-lab.ipynb")
    topology = lab.code_cells().filter(has_text="%topology").first
    assert "<svg" in lab.picture(topology)


def test_the_toolbar_interrupt_stops_an_isolated_cell(page, jupyterlab):
    lab = LabPage(page, jupyterlab)
    lab.new_notebook("Isolated Python")
    cell = lab.start_in_new_cell("%%isolate --pid\nimport time\ntime.sleep(600)")
    page.wait_for_timeout(500)  # the child is asleep
    clicked = time.monotonic()
    page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) '
                 'jp-button[data-command="notebook:interrupt-kernel"]').click()
    lab.wait_for_cells_to_run(cell, timeout=60)  # long before the sleep would end
    print(f"interrupt to prompt: {time.monotonic() - clicked:.2f} s")
    text = "\n".join(lab.outputs(cell))
    assert "KeyboardInterrupt" in text and "nskernel" not in text
    assert len(text.strip().splitlines()) <= 6, text
    answer = lab.run_in_new_cell("1 + 1")
    assert lab.outputs(answer) == ["2"]


def test_restart_kernel_leaves_no_lab_namespace(page, jupyterlab):
    lab = LabPage(page, jupyterlab)
    lab.new_notebook("Isolated Python")
    lab.run_in_new_cell("%netns add red blue\n%veth red:10.0.0.1/24 blue:10.0.0.2/24")
    listed = lab.run_in_new_cell("%netns list")
    assert "red" in " ".join(lab.outputs(listed))
    server = jupyterlab.process.pid
    before = {pid for pid in our_processes() if pid != server and _descends_from(pid, [server])}
    assert before, "the kernel's processes were not found"
    lab.menu("Kernel", "Restart Kernel…")
    lab.accept_dialog()
    assert wait_for(lambda: not before & our_processes().keys(), timeout=30), \
        "processes of the old kernel are left"
    lab.wait_for_kernel_idle()
    listed = lab.run_in_new_cell("%netns list")
    text = " ".join(lab.outputs(listed))
    assert "red" not in text and "blue" not in text, text

