"""Driving a real JupyterLab in Debian's Chromium, as a person would: shared by the browser
tests. The server is started on a free loopback port with its own settings, runtime and
workspace directories, so it never reads or changes the machine's; Playwright drives the
browser that the machine has (no browser is downloaded)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from conftest import free_ports, rest_call
from playwright.sync_api import Locator, Page

CHROMIUM = "/usr/bin/chromium"
#: Chromium's flags for a machine without a network: without the background ones it keeps
#: trying to reach Google's services, and every try is refused.
CHROMIUM_ARGS = ["--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-default-apps"]
#: Settings of the test's JupyterLab: no news or update checks (a pop-up over the page, and
#: traffic off the machine), and every cell in the page (no windowing), so that the tests
#: can read every output.
SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


class JupyterLabServer:
    """`jupyter lab` on 127.0.0.1 serving ``root``, with a token, until :meth:`stop`."""

    def __init__(self, root: Path, state: Path) -> None:
        self.root = root
        self.token = secrets.token_hex(16)
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        for name, values in SETTINGS.items():
            path = state / "settings" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(state / "settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"),
                   JUPYTER_RUNTIME_DIR=str(state / "runtime"),
                   JUPYTER_CONFIG_DIR=str(state / "config"))
        argv = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
                f"--port={self.port}", f"--ServerApp.token={self.token}",
                f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0",
                # Only the kernels the tests made: a machine may have its own (another
                # "Isolated Python" installed with --user, say), which the page would show too.
                "--KernelSpecManager.allowed_kernelspecs=isolated-python",
                "--KernelSpecManager.allowed_kernelspecs=python3",
                "--LabApp.news_url=", "--ServerApp.shutdown_no_activity_timeout=0"]
        if os.geteuid() == 0:
            argv.append("--allow-root")
        self.log = open(state / "jupyterlab.log", "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(argv, env=env, stdout=self.log, stderr=self.log,
                                        start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.api("status")
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"JupyterLab did not start: see {self.log.name}") from None
                time.sleep(0.2)

    def api(self, path: str, method: str = "GET", body: Any = None) -> Any:
        return rest_call(f"{self.url}/api/{path}", self.token, method, body, timeout=30)

    def kernels(self) -> list[dict]:
        """The running kernels. Jupyter Server answers 500 to this while a kernel is still
        being set up (its model has no last_activity yet: a race of the server's); asked
        again a moment later, it answers."""
        for _ in range(50):
            try:
                return self.api("kernels")
            except urllib.error.HTTPError as error:
                if error.code != 500:
                    raise
                time.sleep(0.1)
        return self.api("kernels")

    def shut_down_kernels(self) -> None:
        for kernel in self.kernels():
            self.api(f"kernels/{kernel['id']}", method="DELETE")

    def stop(self) -> None:
        """Shut the kernels down through the API (as the user would), then the server."""
        try:
            if self.process.poll() is None:
                self.shut_down_kernels()
        except OSError:
            pass
        finally:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait()
            self.log.close()


class LabPage:
    """One JupyterLab page in the browser, with what a person does there."""

    def __init__(self, page: Page, server: JupyterLabServer) -> None:
        self.page = page
        self.server = server
        page.goto(f"{server.url}/lab?reset&token={server.token}")  # no tabs of an earlier page
        page.locator(".jp-LauncherCard").first.wait_for(timeout=60_000)

    # ------------------------------------------------------------------ documents
    def launcher_card(self, title: str, category: str = "Notebook") -> Locator:
        return self.page.locator(f'.jp-LauncherCard[data-category="{category}"]'
                                 f'[title="{title}"]')

    def new_notebook(self, kernel_title: str) -> None:
        self.launcher_card(kernel_title).click()
        self.notebook().locator(".jp-CodeCell").first.wait_for()
        self.wait_for_kernel_idle()

    def open_from_file_browser(self, name: str) -> None:
        """Double-click the file in the file browser, as a person opens a notebook."""
        self.page.locator(".jp-DirListing-item", has_text=name).first.dblclick()
        tab = self.page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current")
        tab.filter(has_text=name).wait_for()
        self.notebook().locator(".jp-Cell").first.wait_for()
        self.wait_for_kernel_idle()

    def notebook(self) -> Locator:
        """The notebook in the current tab."""
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")

    def menu(self, *path: str) -> None:
        """Click through the menu bar: menu("Run", "Run All Cells")."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text=path[0]).first.click()
        for label in path[1:]:
            self.page.locator(".lm-Menu-itemLabel").get_by_text(label, exact=True).click()

    def accept_dialog(self) -> None:
        self.page.locator(".jp-Dialog .jp-mod-accept").click()

    # ------------------------------------------------------------------ cells
    def code_cells(self) -> Locator:
        return self.notebook().locator(".jp-CodeCell")

    def run_in_new_cell(self, code: str, timeout: float = 60) -> Locator:
        """Type ``code`` into the last (empty) cell and press Shift+Enter; return the cell
        once its prompt shows a number (it has run)."""
        cell = self.code_cells().nth(self.code_cells().count() - 1)  # not .last: one is added
        cell.locator(".cm-content").click()
        self.page.keyboard.insert_text(code)  # as pasted: no auto-indent, no auto-brackets
        self.page.keyboard.press("Shift+Enter")
        self.wait_for_cells_to_run(cell, timeout)
        return cell

    def start_in_new_cell(self, code: str) -> Locator:
        """Like run_in_new_cell, but return as soon as the cell is running."""
        cell = self.code_cells().nth(self.code_cells().count() - 1)
        cell.locator(".cm-content").click()
        self.page.keyboard.insert_text(code)
        self.page.keyboard.press("Shift+Enter")
        cell.locator(".jp-InputPrompt", has_text="[*]").wait_for()
        return cell

    def wait_for_cells_to_run(self, cells: Locator, timeout: float) -> None:
        """Until none of ``cells`` is running or waiting to run (after an error the rest of
        a Run All is not run: then their prompts stay empty, for the caller to see)."""
        deadline = time.monotonic() + timeout
        while True:
            prompts = cells.locator(".jp-InputPrompt").all_inner_texts()
            if prompts and not any("*" in p for p in prompts) and \
                    any(c.isdigit() for c in prompts[0]) and self.kernels_idle():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"cells still not run after {timeout} s: {prompts}")
            self.page.wait_for_timeout(200)

    def kernels_idle(self) -> bool:
        states = [k["execution_state"] for k in self.server.kernels()]
        return bool(states) and all(state == "idle" for state in states)

    def wait_for_kernel_idle(self, timeout: float = 60) -> None:
        """Until every kernel of the server says idle (through the REST API)."""
        deadline = time.monotonic() + timeout
        while not self.kernels_idle():
            if time.monotonic() > deadline:
                states = [k["execution_state"] for k in self.server.kernels()]
                raise TimeoutError(f"kernels not idle after {timeout} s: {states}")
            self.page.wait_for_timeout(200)

    def outputs(self, cell: Locator) -> list[str]:
        return cell.locator(".jp-OutputArea-output").all_inner_texts()

    def picture(self, cell: Locator) -> str:
        """The SVG of the picture a cell shows (JupyterLab shows it as an image)."""
        image = cell.locator(".jp-OutputArea-output img").first
        image.wait_for()
        assert self.page.evaluate("i => i.complete && i.naturalWidth > 0",
                                  image.element_handle()), "the picture did not load"
        source = image.get_attribute("src") or ""
        prefix = "data:image/svg+xml;base64,"
        if source.startswith(prefix):
            return base64.b64decode(source[len(prefix):]).decode()
        return urllib.request.unquote(source.split(",", 1)[1])


def label_overlaps(page: Page, svg: str) -> list[tuple[str, str]]:
    """Render ``svg`` in the browser and measure it with the browser's own fonts: pairs of
    (label, label or card) whose boxes overlap, a label over a card other than its own."""
    page.set_content(f"<!doctype html><body style='margin:0'>{svg}</body>")
    return page.evaluate("""() => {
        const boxes = [];
        for (const group of document.querySelectorAll("g.ns, g.bridge")) {
            const name = group.dataset.name;
            const r = group.querySelector("rect").getBBox();
            boxes.push({kind: "card", name, text: name, x: r.x, y: r.y, w: r.width, h: r.height});
            for (const t of group.querySelectorAll(":scope > text")) {
                const b = t.getBBox();
                boxes.push({kind: "label", name, text: t.textContent,
                            x: b.x, y: b.y, w: b.width, h: b.height});
            }
        }
        const over = (a, b) => a.x < b.x + b.w && b.x < a.x + a.w &&
                               a.y < b.y + b.h && b.y < a.y + a.h;
        const inside = (a, b) => b.x <= a.x && a.x + a.w <= b.x + b.w &&
                                 b.y <= a.y && a.y + a.h <= b.y + b.h;
        const found = [];
        for (const a of boxes) {
            if (a.kind !== "label") continue;
            for (const b of boxes) {
                if (a === b) continue;
                // its own card, or the namespace's card around its bridge's box
                if (b.kind === "card" && (b.name === a.name || a.name.startsWith(b.name + "/"))) {
                    if (!inside(a, b)) found.push([a.text, "outside " + b.text]);
                } else if (over(a, b) && (b.kind === "card" || a.text < b.text)) {
                    found.push([a.text, b.text]);
                }
            }
        }
        return found;
    }""")


def copy_notebooks(source: Path, target: Path) -> list[str]:
    """The tutorial notebooks, copied where the test's JupyterLab serves them (Run All saves
    into them: the repository's copies stay as they are)."""
    names = sorted(path.name for path in source.glob("*.ipynb"))
    for name in names:
        shutil.copy(source / name, target / name)
    return names
