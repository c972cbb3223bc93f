"""`gpt2scope serve`: the app in web browsers through textual-serve. Each browser tab is a
session: its own app process, with its own model, runner and screen, started when the tab
connects and ended when it closes; at most `max_sessions` run at once."""

from __future__ import annotations

import ipaddress
import logging
import shlex
import socket
import sys
from html import escape
from typing import Any

import aiohttp_jinja2
from aiohttp import WSCloseCode, web
from textual_serve.app_service import AppService
from textual_serve.server import Server, to_int

# What each session runs: this interpreter, so the app is the one installed beside the server.
LAUNCHER = "import sys; from gpt2scope.tui.cli import main; sys.exit(main())"
FULL_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>gpt2scope: no free session</title></head>
<body style="font-family: monospace; background: #0c181f; color: #eee; padding: 2em">
<h1>gpt2scope: no free session</h1>
<p>{why}</p>
<p>Close a tab that is done with it, or ask whoever started the server to raise
<code>--max-sessions</code>, then reload this page.</p>
</body></html>
"""
WHY_CAP = (
    "All {cap} sessions this server runs at once are in use: each browser tab runs its own "
    "copy of the model."
)
WHY_ONE = (
    "The one session this server runs at once is in use: each browser tab runs its own copy "
    "of the model."
)


def why_full(cap: int) -> str:
    return WHY_ONE if cap == 1 else WHY_CAP.format(cap=cap)


def session_command(app_args: list[str]) -> str:
    """The shell command textual-serve runs for each session: the app with `app_args`."""
    return shlex.join([sys.executable, "-c", LAUNCHER, *app_args])


def is_local(host: str) -> bool:
    """Whether binding `host` keeps the server to this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def printed_url(host: str, port: int) -> str:
    """The URL to tell people to open. An address that means "every network" is no place to
    point a browser at, so that one names this machine."""
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    shown = f"[{shown}]" if ":" in shown else shown  # an IPv6 address in a URL
    return f"http://{shown}:{port}"


class ScopeServer(Server):
    """textual-serve's server with a cap on sessions, page URLs taken from the request (so a
    server bound to 0.0.0.0 works from other machines), and every session ended on shutdown."""

    def __init__(self, app_args: list[str], host: str, port: int, max_sessions: int) -> None:
        super().__init__(
            session_command(app_args),
            host=host,
            port=port,
            title="gpt2scope",
            public_url=printed_url(host, port),
        )
        self.max_sessions = max_sessions
        self.sessions: dict[AppService, web.WebSocketResponse] = {}

    @property
    def full(self) -> bool:
        return len(self.sessions) >= self.max_sessions

    def initialize_logging(self) -> None:
        super().initialize_logging()
        # A line per request would bury what matters in the terminal: errors, and our lines.
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

    async def on_startup(self, app: web.Application) -> None:
        self.console.print(
            f"gpt2scope serve: {self.public_url} · at most {self.max_sessions} "
            f"session{'' if self.max_sessions == 1 else 's'}, "
            "each its own app process · ctrl+c stops",
            highlight=False,
        )

    async def on_shutdown(self, app: web.Application) -> None:
        # Closing a session's socket ends its handler, which quits its app process; aiohttp
        # then waits for the handlers before it returns.
        for websocket in list(self.sessions.values()):
            await websocket.close(code=WSCloseCode.GOING_AWAY, message=b"server stopped")

    async def handle_index(self, request: web.Request) -> web.Response:
        if self.full:
            why = why_full(self.max_sessions)
            page = FULL_PAGE.format(cap=self.max_sessions, why=escape(why))
            return web.Response(status=503, text=page, content_type="text/html")
        return aiohttp_jinja2.render_template("app_index.html", request, page_context(request))

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        websocket = web.WebSocketResponse(heartbeat=15)
        if self.full:  # the page was served while a slot was free, and another tab took it
            await websocket.prepare(request)
            why = why_full(self.max_sessions)
            await websocket.send_bytes(f"gpt2scope: no free session. {why}".encode())
            await websocket.close()
            return websocket
        service = AppService(
            self.command,
            write_bytes=websocket.send_bytes,
            write_str=websocket.send_str,
            close=websocket.close,
            download_manager=self.download_manager,
            debug=self.debug,
        )
        self.sessions[service] = websocket  # before any await: the cap counts it at once
        try:
            await websocket.prepare(request)
            width = to_int(request.query.get("width", "80"), 80)
            height = to_int(request.query.get("height", "24"), 24)
            await service.start(width, height)
            await self._process_messages(websocket, service)
        finally:
            await service.stop()  # asks the app to quit and reads its output to the end
            await ended(service)
            del self.sessions[service]
        return websocket


async def ended(service: AppService) -> None:
    """Wait for the session's process to exit. textual-serve stops reading at the end of its
    output and never waits for the process: at shutdown the server could then exit before
    its sessions, and asyncio complains of their transports after the loop has closed."""
    process = service._process  # textual-serve keeps it private and has no method for this
    if process is not None:
        await process.wait()


def page_context(request: web.Request) -> dict[str, Any]:
    """textual-serve's page template's values, with the URLs of the host the browser used."""
    websocket_scheme = "wss" if request.scheme == "https" else "ws"
    return {
        "font_size": to_int(request.query.get("fontsize", "16"), 16),
        "app_websocket_url": f"{websocket_scheme}://{request.host}/ws",
        "config": {"static": {"url": f"{request.scheme}://{request.host}/static/"}},
        "application": {"name": "gpt2scope"},
    }


def serve(app_args: list[str], host: str, port: int, max_sessions: int) -> None:
    """Serve the app with `app_args` until ctrl+c or SIGTERM; raises OSError when the port
    cannot be bound."""
    check_free(host, port)
    ScopeServer(app_args, host, port, max_sessions).serve()


def check_free(host: str, port: int) -> None:
    """Raise OSError when the port cannot be bound. aiohttp binds only after it has run the
    startup that prints the URL, so without this a taken port would print the URL first."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds it
        probe.bind((host, port))
