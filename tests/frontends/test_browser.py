"""What a person sees: the quickstart in JupyterLab and the Voila dashboard page, in a real browser.

Debian's Chromium, headless, driven by Playwright for Python, on loopback servers. Each page gets its
buttons clicked (Start Workers, Submit Task) and must then show the task in ``success`` without anyone
pressing Refresh: the live listener has to work through a real kernel and a real widget manager. A
widget that fails to render ("Error displaying widget") or any console error fails the test.
JupyterLab and Voila run with a HOME, Jupyter config, data, runtime, settings and workspaces of their
own under tmp_path: JupyterLab restored the layout of a person's own workspace, naming notebooks this
root lacks, and failed on the 404s. A stale workspace planted in that HOME keeps it checked,
and the person's own ~/.jupyter must be left as it was.
Screenshots go to build/screenshots/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FAST, ROOT
from yadtq.client.client import Client
from yadtq.core.config import Config
from yadtq.frontends.standalone import Server, free_port
from yadtq.store.backend import Backend
from yadtq.transport.broker import Broker

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "build" / "screenshots"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: The stylesheets Voila's lab template loads from a CDN (see Watched).
FONT_AWESOME = "https://cdn.jsdelivr.net/npm/@fortawesome/**"

pytestmark = [
    pytest.mark.services,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/install-system.sh)"),
]
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


class Watched:
    """A page whose console errors and uncaught exceptions are collected, to fail on them."""

    def __init__(self, browser: Any) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.errors: list[str] = []
        self.page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        # Voila's page template links Font Awesome from a CDN, and this machine has no Internet: answer
        # those two stylesheets (icons only) with an empty one; any other failed resource still fails
        self.page.route(FONT_AWESOME, lambda route: route.fulfill(status=200, content_type="text/css", body=""))
        SHOTS.mkdir(parents=True, exist_ok=True)

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def wait_for_success(self, deadline_s: float, name: str) -> str:
        """Read the submitted task's id from the message label, then wait (no Refresh) for its row
        in the task table to say success."""
        label = self.page.locator("div.widget-label", has_text="as task ").first
        label.wait_for(timeout=30_000)
        match = re.search(r"as task ([0-9a-f]{32})", label.inner_text())
        assert match, label.inner_text()
        task_id = match.group(1)
        row = self.page.locator("tr", has_text=task_id).filter(has_text="success")
        row.first.wait_for(timeout=deadline_s * 1000)
        self.shot(name)
        return task_id

    def start_workers_and_submit(self, start: Any, workers: int, started: str, shot: str) -> None:
        """Press Start Workers for ``workers``, wait for the ``started`` message, press Submit Task,
        and wait (60 s) until the task table shows a success, saving ``shot``."""
        self.page.get_by_role("spinbutton", name="Workers:").fill(str(workers))
        start.click()
        self.page.locator("div.widget-label", has_text=started).wait_for(timeout=30_000)
        self.page.get_by_role("button", name="Submit Task").click()
        self.wait_for_success(60, shot)

    def check_clean(self) -> None:
        assert "Error displaying widget" not in self.page.content()
        assert not self.errors, f"browser console errors: {self.errors}"


#: A layout as JupyterLab 4 saves it, naming a notebook the test's root folder lacks: planted where
#: JupyterLab finds its workspaces unless told otherwise, it stands for a person's stale workspace.
STALE_WORKSPACE = {
    "data": {
        "layout-restorer:data": {
            "main": {
                "dock": {"type": "tab-area", "currentIndex": 0, "widgets": ["notebook:01-quickstart-gone.ipynb"]},
                "current": "notebook:01-quickstart-gone.ipynb",
            },
            "down": {"size": 0, "collapsed": True, "widgets": []},
            "left": {
                "collapsed": False,
                "visible": True,
                "current": "filebrowser",
                "widgets": ["filebrowser", "running-sessions", "@jupyterlab/toc:plugin", "extensionmanager.main-view"],
            },
            "right": {"collapsed": True, "visible": True, "widgets": ["jp-property-inspector", "debugger-sidebar"]},
            "relativeSizes": [0.19, 0.81, 0],
            "top": {"simpleVisibility": True},
        },
        "notebook:01-quickstart-gone.ipynb": {"data": {"path": "01-quickstart-gone.ipynb", "factory": "Notebook"}},
    },
    "metadata": {"id": "default"},
}


def _listing(folder: Path) -> dict[str, int] | None:
    """Every path under ``folder`` with its mtime, or None when it does not exist."""
    if not folder.exists():
        return None
    return {str(path): path.lstat().st_mtime_ns for path in [folder, *folder.rglob("*")]}


@pytest.fixture
def jupyter_home(base_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    """Folders of the test's own for JupyterLab and Voila (and their kernels), set in os.environ,
    which both servers inherit: a fresh HOME, with Jupyter's config and data in it, and runtime,
    settings and workspaces apart. The kernel still finds the services (YADTQ_HOME stays the real
    one) and the python3 kernel spec (sys.prefix/share/jupyter is always searched). In the HOME's
    default workspaces folder lies a stale workspace, which JupyterLab must not restore. The
    person's own ~/.jupyter and ~/.local/share/jupyter must be as they were."""
    real = [Path.home() / ".jupyter", Path.home() / ".local" / "share" / "jupyter"]
    before = [_listing(folder) for folder in real]
    home = tmp_path / "home"
    dirs = {
        "HOME": home,
        "JUPYTER_CONFIG_DIR": home / ".jupyter",  # where a person's workspaces are, unless ...
        "JUPYTER_DATA_DIR": home / ".local" / "share" / "jupyter",
        "JUPYTER_RUNTIME_DIR": tmp_path / "jupyter-runtime",
        "JUPYTERLAB_SETTINGS_DIR": tmp_path / "lab-settings",
        "JUPYTERLAB_WORKSPACES_DIR": tmp_path / "lab-workspaces",  # ... this says otherwise
        "IPYTHONDIR": home / ".ipython",
        "MPLCONFIGDIR": tmp_path / "matplotlib",
        "XDG_CONFIG_HOME": home / ".config",
        "XDG_CACHE_HOME": home / ".cache",
        "XDG_DATA_HOME": home / ".local" / "share",
    }
    for name, folder in dirs.items():
        folder.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(name, str(folder))
    for name in ("JUPYTER_PATH", "JUPYTER_CONFIG_PATH"):  # extra folders a person may search
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("YADTQ_HOME", str(base_config.home))
    stale = dirs["JUPYTER_CONFIG_DIR"] / "lab" / "workspaces" / "default-37a8.jupyterlab-workspace"
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps(STALE_WORKSPACE))
    yield dirs
    assert [_listing(folder) for folder in real] == before, "the test changed the person's own Jupyter files"


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in {timeout}s")


@pytest.fixture
def lab(base_config: Config, tmp_path: Path, jupyter_home: dict[str, Path]) -> Iterator[tuple[str, Path]]:
    """JupyterLab on loopback, in ``jupyter_home``'s folders, over a copy of the quickstart without
    outputs, widget state or its clean-up cell (the test cleans up the namespace itself, after the
    page is done)."""
    notebook = json.loads((ROOT / "notebooks" / "01-quickstart.ipynb").read_text())
    notebook["metadata"].pop("widgets", None)
    notebook["cells"] = notebook["cells"][:-2]  # the clean-up heading and cell
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    (tmp_path / "quickstart.ipynb").write_text(json.dumps(notebook))
    settings = jupyter_home["JUPYTERLAB_SETTINGS_DIR"] / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    port = free_port()
    env = {
        **os.environ,  # with jupyter_home's folders
        "YADTQ_KAFKA_BOOTSTRAP": base_config.kafka_bootstrap,
        "YADTQ_REDIS_URL": base_config.redis_url,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    env.pop("YADTQ_NAMESPACE", None)
    log = (tmp_path / "lab.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--ServerApp.root_dir={tmp_path}",
            "--IdentityProvider.token=",
            "--PasswordIdentityProvider.hashed_password=",
            "--LabApp.expose_app_in_browser=True",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/status", 60)
        yield f"http://127.0.0.1:{port}/lab/tree/quickstart.ipynb", tmp_path
    finally:
        server.terminate()  # kernels go too, and their pools stop their workers
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()


RUN_ALL = """async () => {
  const app = window.jupyterapp;
  const deadline = Date.now() + 60000;
  while (!(app.shell.currentWidget && app.shell.currentWidget.sessionContext)) {
    if (Date.now() > deadline) throw new Error('no notebook session');
    await new Promise(r => setTimeout(r, 100));
  }
  const session = app.shell.currentWidget.sessionContext;
  await session.ready;
  while (!(session.session && session.session.kernel && session.session.kernel.status === 'idle')) {
    if (Date.now() > deadline) throw new Error('kernel not idle');
    await new Promise(r => setTimeout(r, 100));
  }
  await app.commands.execute('notebook:run-all-cells');
}"""


@pytest.mark.timeout(300)
def test_quickstart_in_jupyterlab_updates_itself(browser: Any, lab: tuple[str, Path], base_config: Config) -> None:
    url, _root = lab
    watched = Watched(browser)
    page = watched.page
    page.goto(url)
    page.wait_for_function("() => window.jupyterapp !== undefined", timeout=60_000)
    page.evaluate(RUN_ALL)
    namespace = ""
    try:
        start = page.get_by_role("button", name="Start Workers")
        start.wait_for(timeout=180_000)  # the whole notebook ran: its last cell is the dashboard
        namespace = re.search(r"quickstart-[0-9a-f]{8}", page.content()).group(0)  # type: ignore[union-attr]
        start.scroll_into_view_if_needed()
        watched.shot("lab-1-dashboard")
        watched.start_workers_and_submit(start, 1, "started worker-4", "lab-2-task-success")
        page.locator("img").last.scroll_into_view_if_needed()
        watched.shot("lab-3-live-plots")
        watched.check_clean()
    finally:
        page.close()
        if namespace:
            _purge(base_config.replace(namespace=namespace))


def test_voila_dashboard_page_updates_itself_and_stops_its_workers(
    browser: Any, base_config: Config, jupyter_home: dict[str, Path]
) -> None:
    config = base_config.replace(namespace=f"t{uuid.uuid4().hex[:10]}", **FAST)
    watched = Watched(browser)
    page = watched.page
    try:
        with Server(config, cwd=ROOT) as server:
            server.wait_ready()
            page.goto(server.url, timeout=120_000)
            start = page.get_by_role("button", name="Start Workers")
            start.wait_for(timeout=120_000)
            watched.shot("voila-1-page")
            watched.start_workers_and_submit(start, 2, "started worker-1, worker-2", "voila-2-task-success")
            watched.check_clean()
            page.close()
        with Client(config) as client:  # Voila stopped its kernel; the kernel's pool its workers
            states = set(client.workers()["state"])
            assert states <= {"stopped", "stopping"}, states
    finally:
        _purge(config)


def _purge(config: Config) -> None:
    Backend(config).purge()
    Broker(config).delete_topics()


def test_chromium_is_in_the_optional_system_packages() -> None:
    script = (ROOT / "scripts" / "install-system.sh").read_text()
    assert re.search(r"command -v chromium .*optional\+=\(chromium\)", script), "install-system.sh lacks chromium"
    assert shutil.which("chromium")
