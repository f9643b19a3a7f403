"""Fixtures for the browser tests: a private JupyterLab server and headless Chromium (Playwright).

``jupyter_lab`` starts ``jupyter lab`` from this Python's environment (the venv, so the
``retina-edu`` kernel under ``<venv>/share/jupyter/kernels`` is found) on 127.0.0.1, a free port
and a random token, serving ``notebooks/``. Everything the server and its kernels write (HOME,
``JUPYTER_*``, IPython, workspaces, user settings) lives in a temporary folder, so the tests work the
same from ``make test`` and by hand, and never touch ``~`` or the venv. The server is always stopped
by its PID (terminate, wait, kill) when the session ends.

The tests skip, saying why, when the ``playwright`` package or Chromium (``/usr/bin/chromium`` or
``chromium`` on PATH; ``make browser-deps`` installs Debian's) is missing.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
KERNEL_NAME = "retina-edu"  # the kernelspec the notebooks' metadata names (`make kernel` registers it)

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# JupyterLab user settings for the test server (written into its private user-settings folder):
# no news / update pop-ups, and no autosave, so a run never writes the notebooks back to disk.
LAB_USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    # No blank space after the last cell: keeps the full-notebook screenshots tight.
    "@jupyterlab/notebook-extension/tracker": {"scrollPastEnd": False},
}

SERVER_START_TIMEOUT_S = 90


# ---------------------------------------------------------------------------------------------
# skip logic
# ---------------------------------------------------------------------------------------------
def find_chromium() -> str | None:
    """Debian's Chromium: ``/usr/bin/chromium``, else ``chromium`` on PATH."""
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """The Chromium executable; skips the browser tests (with the reason) when it or Playwright is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as error:
        pytest.skip(
            f"browser tests: the playwright package cannot be imported ({error}); "
            "install the test extras: pip install -e '.[test]'"
        )
    path = find_chromium()
    if path is None:
        pytest.skip(
            "browser tests: Chromium not found (/usr/bin/chromium or `chromium` on PATH); "
            "run `make browser-deps` as root (Debian: apt-get install chromium)"
        )
    return path


# ---------------------------------------------------------------------------------------------
# JupyterLab
# ---------------------------------------------------------------------------------------------
@dataclass
class JupyterLab:
    """A running JupyterLab server; ``api`` talks to its REST API with the token."""

    base_url: str
    token: str
    pid: int
    log_path: Path
    notebooks: Path = NOTEBOOKS  # the server's root_dir
    artifacts: Path = ARTIFACTS
    kernel_name: str = KERNEL_NAME

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}{path}{sep}token={self.token}"

    def api(self, path: str, method: str = "GET", timeout: float = 10) -> Any:
        request = urllib.request.Request(
            self.base_url + path, method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def sessions_for(self, notebook: str) -> list[dict[str, Any]]:
        return [s for s in self.api("/api/sessions") if s.get("path") == notebook]

    def shutdown_sessions(self, notebook: str) -> None:
        """Shut down the kernel(s) of ``notebook`` (frees the CPU for the next notebook)."""
        for session in self.sessions_for(notebook):
            self.api(f"/api/sessions/{session['id']}", method="DELETE")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_user_settings(folder: Path) -> None:
    for name, values in LAB_USER_SETTINGS.items():
        path = folder / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values, indent=2))


def _stop(process: subprocess.Popen) -> None:
    """Terminate JupyterLab by its PID (it shuts its kernels down), wait, then kill its process group."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: the server and its kernels
            except ProcessLookupError:
                pass
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def shapes_data() -> Path:
    """The course's shapes data (``data/shapes``), made once if missing, exactly as notebook 00 makes it."""
    from retina_edu.data import make_shapes_splits

    make_shapes_splits(REPO / "data" / "shapes", progress=False)
    return REPO / "data" / "shapes"


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """``tests/browser/artifacts/`` (git-ignored): screenshots and logs of the last run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in list(ARTIFACTS.glob("*.png")) + list(ARTIFACTS.glob("*.log")) + list(ARTIFACTS.glob("*.txt")):
        old.unlink()
    return ARTIFACTS


@pytest.fixture(scope="session")
def jupyter_lab(
    chromium_path: str, shapes_data: Path, artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JupyterLab]:
    """A JupyterLab server for this test session, serving ``notebooks/``; always stopped at the end."""
    base = tmp_path_factory.mktemp("jupyterlab")
    dirs = {
        name: base / name
        for name in ("home", "config", "data", "runtime", "ipython", "settings", "workspaces", "checkpoints")
    }
    for folder in dirs.values():
        folder.mkdir()
    _write_user_settings(dirs["settings"])

    port, token = _free_port(), secrets.token_hex(24)
    env = dict(os.environ)
    env.update(
        HOME=str(dirs["home"]),
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        IPYTHONDIR=str(dirs["ipython"]),
        JUPYTER_PLATFORM_DIRS="1",
        PYDEVD_DISABLE_FILE_VALIDATION="1",
        JUPYTER_TOKEN=token,  # not on the command line, so not in `ps`
    )
    env.setdefault("MPLCONFIGDIR", str(base / "mplconfig"))  # keep make's font cache when it gives one
    env.pop("MPLBACKEND", None)  # a learner's kernel has none; the notebooks say %matplotlib inline
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={NOTEBOOKS}",
        # checkpoints (JupyterLab makes one when it opens a notebook) go to the temporary folder,
        # not to notebooks/.ipynb_checkpoints
        f"--FileCheckpoints.checkpoint_dir={dirs['checkpoints']}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        f"--LabApp.user_settings_dir={dirs['settings']}",
        f"--LabApp.workspaces_dir={dirs['workspaces']}",
        # window.jupyterapp: lets the tests read the notebook model (output types, execution counts)
        "--LabApp.expose_app_in_browser=True",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")

    log_path = artifacts_dir / "jupyterlab.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=NOTEBOOKS,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    lab = JupyterLab(base_url=f"http://127.0.0.1:{port}", token=token, pid=process.pid, log_path=log_path)
    try:
        started = time.perf_counter()
        deadline = started + SERVER_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"jupyter lab exited with code {process.returncode} before answering:\n{lab.log_tail()}")
            try:
                lab.api("/api/status", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.perf_counter() > deadline:
                    pytest.fail(
                        f"jupyter lab did not answer /api/status within {SERVER_START_TIMEOUT_S} s:\n{lab.log_tail()}"
                    )
                time.sleep(0.25)
        print(f"\njupyter lab (pid {process.pid}) up in {time.perf_counter() - started:.1f} s at {lab.base_url}")
        specs = lab.api("/api/kernelspecs")["kernelspecs"]
        if KERNEL_NAME not in specs:
            pytest.fail(
                f"the notebooks' kernel {KERNEL_NAME!r} is not registered (found {sorted(specs)}): run `make kernel`"
            )
        yield lab
    finally:
        _stop(process)


# ---------------------------------------------------------------------------------------------
# Chromium
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def browser(chromium_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium; its HOME (crash reports, dconf, caches) is a temporary folder too."""
    from playwright.sync_api import sync_playwright

    home = tmp_path_factory.mktemp("chromium-home")
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"))
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, env=env)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, jupyter_lab: JupyterLab, request: pytest.FixtureRequest, artifacts_dir: Path) -> Iterator[Any]:
    """A fresh browser tab (1280 x 900); its console errors go to ``artifacts/<test>-console.log``."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    tab = context.new_page()
    messages: list[str] = []
    tab.on(
        "console", lambda m: messages.append(f"console.{m.type}: {m.text}") if m.type in ("error", "warning") else None
    )
    tab.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
    try:
        yield tab
    finally:
        name = request.node.name.replace("/", "_").replace("[", "-").replace("]", "")
        if messages:
            (artifacts_dir / f"{name}-console.log").write_text("\n".join(messages) + "\n")
        context.close()
