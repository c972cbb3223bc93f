"""`gpt2scope serve`: the app in a real headless browser (Debian's chromium driven by
Selenium), one app process per tab, a cap on sessions, and a clean shutdown; and the command
line's side without a browser."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpt2scope.tui import cli
from gpt2scope.tui.cli import app_argv, app_parser, main, options_from
from gpt2scope.tui.views import PANES
from gpt2scope.weights.hub import DEMO_DIR

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
PROMPT = "The cat sat on the"
CAP = 2
TIMEOUT = 60.0  # a session starts a Python with torch: seconds on 2 busy cores
# xterm.js draws on a canvas, so the page's text is not in the DOM. The page's script keeps
# its terminal in a local; this catches it as textual-serve's client stores its first addon
# next to it, and reads the screen through xterm's own buffer API.
CATCH_TERMINAL = """
Object.defineProperty(Object.prototype, 'webglAddon', {
  configurable: true,
  set(value) {
    window.scopeTerminal = this.terminal;
    Object.defineProperty(this, 'webglAddon', {value, writable: true, configurable: true});
  },
});
"""
READ_SCREEN = """
const t = window.scopeTerminal;
if (!t) return '';
const b = t.buffer.active, rows = [];
for (let i = 0; i < t.rows; i++) rows.push(b.getLine(b.viewportY + i).translateToString(true));
return rows.join('\\n');
"""


# --- the command line, without a browser ----------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--prompt", "-1 is a number", "--temperature", "0", "--bos", "--seed", "7"],
        ["--weights", "some dir/model.safetensors", "--top-p", "0.25", "--device", "cpu"],
    ],
)
def test_each_session_gets_the_options_serve_was_given(argv):
    options = options_from(app_parser().parse_args(argv))
    assert options_from(app_parser().parse_args(app_argv(options))) == options


@pytest.mark.parametrize("host, warned", [("127.0.0.1", False), ("0.0.0.0", True)])
def test_binding_beyond_this_machine_says_who_gets_a_session(monkeypatch, capsys, host, warned):
    served = []
    monkeypatch.setattr("gpt2scope.tui.serve.serve", lambda *args: served.append(args))
    assert main(["serve", "--weights", str(DEMO_DIR), "--host", host, "--port", "8123"]) == 0
    out = capsys.readouterr().out
    assert ("anyone who can reach port 8123 gets a session" in out) == warned
    assert served and served[0][1:] == (host, 8123, 4)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--port", "0"], "--port 0: must be in 1..65535"),
        (["--max-sessions", "0"], "--max-sessions 0: must be 1 or more"),
        (["--weights", "/nonexistent/model"], "/nonexistent/model"),
        (["--layer", "99"], "--layer 99"),
    ],
)
def test_a_server_that_cannot_serve_fails_at_once_in_one_line(monkeypatch, capsys, argv, message):
    monkeypatch.setattr("gpt2scope.tui.serve.serve", lambda *args: pytest.fail("served"))
    weights = [] if "--weights" in argv else ["--weights", str(DEMO_DIR)]
    assert main(["serve", *weights, *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gpt2scope serve: error: ") and err.count("\n") == 1 and message in err


def test_a_port_in_use_is_a_one_line_error(capsys):
    pytest.importorskip("textual_serve", reason="needs textual-serve (the serve extra)")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--weights", str(DEMO_DIR), "--port", str(port)]) == 1
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and f"--port {port}: " in err and "in use" in err
    assert "http://" not in out  # no URL printed for a server that never listened


def test_without_textual_serve_it_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name: None)
    assert main(["serve", "--weights", str(DEMO_DIR)]) == 1
    assert "pip install 'gpt2scope[serve]'" in capsys.readouterr().err


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_tab_that_connects_past_the_cap_is_told_so_and_closed():
    pytest.importorskip("textual_serve", reason="needs textual-serve (the serve extra)")
    from aiohttp import WSMsgType
    from aiohttp.test_utils import TestClient, TestServer

    from gpt2scope.tui.serve import ScopeServer

    server = ScopeServer(["--weights", str(DEMO_DIR)], "127.0.0.1", 8000, max_sessions=1)
    server.sessions[object()] = object()  # the one session: another tab took it
    async with TestClient(TestServer(await server._make_app())) as client:
        socket = await client.ws_connect("/ws")
        told = await socket.receive()
        assert told.type == WSMsgType.BINARY and b"no free session" in told.data
        assert (await socket.receive()).type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
        server.sessions.clear()  # the stand-in has no socket for the shutdown to close


# --- in a browser ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> set[int]:
    """Every process below `pid`, from /proc."""
    below: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended while we looked
            continue
        below.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        todo.extend(kids := below.get(todo.pop(), []))
        found.update(kids)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def sessions(server: subprocess.Popen) -> set[int]:
    """The app processes the server runs: Pythons, not the shells textual-serve starts."""
    return {p for p in children(server.pid) if "python" in Path(f"/proc/{p}/comm").read_text()}


def wait_until(done: Callable[[], object], what: str, timeout: float = TIMEOUT) -> object:
    deadline = time.monotonic() + timeout
    while not (result := done()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.2)
    return result


@dataclass
class Served:
    process: subprocess.Popen
    url: str
    log: Path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """`gpt2scope serve` on a free port with a cap of CAP, in its own process group."""
    port, log = free_port(), tmp_path / "serve.log"
    argv = ["serve", "--port", str(port), "--max-sessions", str(CAP)]
    argv += ["--weights", str(DEMO_DIR), "--prompt", PROMPT]
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    from gpt2scope.tui.serve import LAUNCHER

    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: f"serve: {url}" in log.read_text(), "the server to start")
        yield Served(process, url, log)
    finally:
        if process.poll() is None:  # a failed test: leave nothing running
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def browser():
    """Headless chromium, or a skip saying what is missing."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(
            "needs Debian's chromium and chromium-driver on PATH "
            "(apt-get install -y chromium chromium-driver; .ci/run installs them)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the test extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,800")
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def open_tab(driver, url: str, first: bool = False) -> str:
    if not first:
        driver.switch_to.new_window("tab")
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CATCH_TERMINAL})
    driver.get(url)
    return driver.current_window_handle


def screen(driver, tab: str) -> str:
    driver.switch_to.window(tab)
    return driver.execute_script(READ_SCREEN)


def status_line(driver, tab: str) -> str:
    return screen(driver, tab).split("\n", 1)[0]


def press(driver, tab: str, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.switch_to.window(tab)
    driver.find_element(By.CSS_SELECTOR, ".xterm-helper-textarea").send_keys(key)


@pytest.mark.slow
def test_the_app_in_browser_tabs_one_session_each_capped_and_shut_down_cleanly(served, browser):
    titles = [pane.title for pane in PANES]
    assert len(titles) == 6

    first = open_tab(browser, served.url, first=True)
    wait_until(lambda: all(t in screen(browser, first) for t in titles), "the six panes")
    assert " L0 H0 " in status_line(browser, first) and PROMPT in screen(browser, first)
    press(browser, first, "]")
    wait_until(lambda: " L1 H0 " in status_line(browser, first), "] to show layer 1")

    second = open_tab(browser, served.url)
    wait_until(lambda: all(t in screen(browser, second) for t in titles), "a second session")
    assert " L0 H0 " in status_line(browser, second)  # its own app, not the first tab's
    assert " L1 H0 " in status_line(browser, first)
    apps = wait_until(lambda: len(s := sessions(served.process)) == CAP and s, "two sessions")

    open_tab(browser, served.url)  # one past the cap
    page = browser.find_element("tag name", "body").text
    assert "no free session" in page and f"All {CAP} sessions" in page
    assert sessions(served.process) == apps

    browser.switch_to.window(second)
    browser.close()  # closing a tab ends its session and frees its process
    wait_until(lambda: len(sessions(served.process)) == CAP - 1, "the closed tab's session to end")

    everything = children(served.process.pid) | apps
    served.process.send_signal(signal.SIGINT)  # the server alone, as ctrl+c in its terminal
    assert served.process.wait(timeout=TIMEOUT) == 0
    wait_until(lambda: not any(alive(p) for p in everything), "every session process to end")
    assert "Traceback" not in served.log.read_text()
