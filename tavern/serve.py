"""`tavern serve`: the app in a browser (textual-serve), behind a secret and an Origin check.

textual-serve alone answers any client: a page on any site the user visits could open
`ws://127.0.0.1:PORT/ws`, read the rendered library and send keys (Ctrl+O imports any file).
Here every request needs the run's secret, and a request a browser sent from another page
(its `Origin` is not the address the user opened) is refused:

- the secret is a random token per run, printed in the URL (`/?token=...`), or the password
  of `[serve] password` in settings.toml / `$TAVERN_SERVE_PASSWORD` when one is set (typed
  into the page's form, or given as `?token=`);
- the page answered with a good secret sets an HttpOnly, SameSite=Strict cookie holding a
  per-run session value (never the password), which the page's own script, stylesheet and
  WebSocket requests carry: textual-serve's script builds the socket URL itself, so the token
  cannot travel in it;
- a browser's request carrying an `Origin` must come from the page it talks to (the Origin
  names the request's own Host); on a loopback bind the Host must be a loopback name too, so
  that a DNS-rebound name (evil.example -> 127.0.0.1) is refused. Any port is accepted, so an
  SSH tunnel (`ssh -L 9000:127.0.0.1:8000`) works;
- a bind other than loopback needs a password: a token in a URL sent over plain HTTP is read
  by anyone who sees the URL or the traffic.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import re
import secrets
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tavern.errors import TavernError

if TYPE_CHECKING:
    # aiohttp and textual-serve load only when `tavern serve` runs (they cost start-up time).
    from aiohttp import web
    from aiohttp.typedefs import Handler, Middleware
    from textual_serve.server import Server

PASSWORD_ENV = "TAVERN_SERVE_PASSWORD"
TOKEN_PARAM = "token"
LOGIN_PAGE = (
    "<!DOCTYPE html><title>Tavern</title><form method=post action=/>Tavern: the token from "
    "<code>tavern serve</code>, or the [serve] password: <input type=password name=token autofocus>"
    " <button>Open</button></form>\n"
)
_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
# Sent with every answer: the page's URL holds the token, so no Referer may carry it away
# (the page loads a Google font), and no other site may frame the app to click in it.
SAFE_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost` (a name, an `[::1]` bracketed or not)."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def read_password(home: str | None) -> str:
    """`$TAVERN_SERVE_PASSWORD`, else `[serve] password` of the home's settings.toml, else ""."""
    env = os.environ.get(PASSWORD_ENV, "")
    if env:
        return env
    from tavern.config import load_settings
    from tavern.paths import open_home

    return load_settings(open_home(home).settings_file).serve.password


@dataclass(frozen=True)
class Access:
    """Who may use this run of the server."""

    secret: str
    """The credential: the random token, or the password."""
    is_password: bool
    loopback: bool
    """Bound to a loopback address: the Host of every request must be a loopback name."""
    port: int
    session: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    """The cookie's value once the secret was shown: per run, so the password is never stored."""

    @property
    def cookie(self) -> str:
        # Per port: two servers on one host (cookies ignore ports) do not log each other out.
        return f"tavern_session_{self.port}"

    def secret_ok(self, supplied: str | None) -> bool:
        return supplied is not None and hmac.compare_digest(supplied.encode(), self.secret.encode())

    def session_ok(self, supplied: str | None) -> bool:
        return supplied is not None and hmac.compare_digest(supplied.encode(), self.session.encode())


def make_access(host: str, port: int, password: str) -> Access:
    """The secret for this run; a bind other than loopback without a password is an error."""
    loopback = is_loopback(host)
    if not loopback and not password:
        raise TavernError(
            f"refusing to serve on {host} without a password: a token in a plain-HTTP URL is read by "
            f"anyone who sees the URL or the traffic; set [serve] password in settings.toml or "
            f"{PASSWORD_ENV} (or keep 127.0.0.1 and use an SSH tunnel)"
        )
    if password:
        return Access(password, is_password=True, loopback=loopback, port=port)
    return Access(secrets.token_urlsafe(24), is_password=False, loopback=loopback, port=port)


def origin_ok(origin: str | None, host: str) -> bool:
    """No Origin (not a browser page's request) or the Origin of the Host it was sent to."""
    if origin is None:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


def host_refused(access: Access, host: str) -> str | None:
    """Why this Host is refused, or None."""
    if not _HOST.fullmatch(host):  # the page quotes the Host in its URLs: a name and a port only
        return "forbidden: malformed Host header"
    if access.loopback and not is_loopback(urlsplit(f"//{host}").hostname or ""):
        return f"forbidden: Host {host!r} is not a loopback name of this server"
    return None  # on another bind any name of this machine is fine; the password guards


def shown_url(access: Access, host: str, port: int) -> str:
    """The URL to open: the token in it, never the password."""
    if host in ("", "0.0.0.0", "::"):  # every interface: name the machine
        host = socket.gethostname()
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    url = f"http://{netloc}/"
    return url if access.is_password else f"{url}?{TOKEN_PARAM}={access.secret}"


def _refuse(status: int, why: str) -> web.Response:
    from aiohttp import web

    return web.Response(status=status, text=f"tavern: {why}\n", headers=SAFE_HEADERS)


def make_guard(access: Access) -> Middleware:
    """The aiohttp middleware that checks Host, Origin and the secret before any handler."""
    from aiohttp import web

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = host_refused(access, request.host)
        if refused:
            return _refuse(403, refused)
        if not origin_ok(request.headers.get("Origin"), request.host):
            return _refuse(403, "forbidden: the request comes from another site's page (Origin)")
        token = request.query.get(TOKEN_PARAM)
        if token is not None and not access.secret_ok(token):
            return _refuse(403, "forbidden: wrong token")
        if token is None and not access.session_ok(request.cookies.get(access.cookie)):
            if request.method == "GET" and request.path == "/":
                return web.Response(
                    status=401, text=LOGIN_PAGE, content_type="text/html", headers=SAFE_HEADERS
                )
            if not (request.method == "POST" and request.path == "/"):  # the form checks its own
                return _refuse(403, "forbidden: no token (open the URL that `tavern serve` printed)")
        response = await handler(request)
        if not response.prepared:  # a socket's headers are gone already; it needs neither
            if token is not None:  # the page shown with the secret: its own requests carry the cookie
                set_session_cookie(response, access)
            response.headers.update(SAFE_HEADERS)
        return response

    return guard


def set_session_cookie(response: web.StreamResponse, access: Access) -> None:
    response.set_cookie(access.cookie, access.session, httponly=True, samesite="Strict", path="/")


def make_server(command: str, host: str, port: int, access: Access) -> Server:
    """textual-serve's Server with the guard, the page's URLs on the Host the user opened,
    and our URL printed instead of textual-serve's banner."""
    import aiohttp_jinja2
    from aiohttp import web
    from textual_serve.server import Server

    class GuardedServer(Server):
        async def _make_app(self) -> web.Application:
            app = await super()._make_app()
            app.middlewares.append(make_guard(access))
            app.router.add_post("/", self.handle_login)
            return app

        async def handle_index(self, request: web.Request) -> web.Response:
            # textual-serve builds the socket and static URLs from the bind address; built from
            # the Host the user opened instead, they reach the host the cookie was set for.
            base = f"{request.scheme}://{request.host}"
            ws_scheme = "wss" if request.scheme == "https" else "ws"
            size = request.query.get("fontsize", "16")
            context = {
                "font_size": int(size) if size.isdigit() else 16,
                "app_websocket_url": f"{ws_scheme}://{request.host}/ws",
                "config": {"static": {"url": f"{base}/static/"}},
                "application": {"name": self.title},
            }
            return aiohttp_jinja2.render_template("app_index.html", request, context)

        async def handle_login(self, request: web.Request) -> web.Response:
            form = await request.post()
            supplied = form.get(TOKEN_PARAM)
            if not access.secret_ok(supplied if isinstance(supplied, str) else None):
                return _refuse(403, "forbidden: wrong token or password")
            # Redirected on the same site, the Strict cookie goes with the next request.
            response = web.Response(status=303, headers={"Location": "/"})
            set_session_cookie(response, access)
            return response

        def initialize_logging(self) -> None:
            super().initialize_logging()
            # aiohttp's access log would print every request line, token included.
            logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

        async def on_startup(self, app: web.Application) -> None:
            pass  # textual-serve's banner names the bare URL, before the port is even bound

        def serve(self, debug: bool = False) -> None:
            self.debug = debug
            self.initialize_logging()
            # aiohttp calls `print` once it listens: a port already taken never shows a URL.
            web.run_app(self._make_app(), host=self.host, port=self.port, print=lambda _: announce())

    def announce() -> None:
        url = shown_url(access, host, port)
        how = " (enter the [serve] password there)" if access.is_password else ""
        print(f"Serving Tavern at {url}{how}\nPress Ctrl+C to quit.", flush=True)

    return GuardedServer(command, host=host, port=port, title="Tavern")


def serve(command: str, host: str, port: int, home: str | None) -> None:
    """Serve `command` (one process per browser tab) until Ctrl+C."""
    try:
        import textual_serve  # noqa: F401
    except ImportError:
        raise TavernError("tavern serve needs textual-serve: pip install textual-serve") from None
    access = make_access(host, port, read_password(home))
    server = make_server(command, host, port, access)
    try:
        server.serve()
    except OSError as err:  # the port is taken, the address is not this machine's
        raise TavernError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def default_command(home: str | None, model: str | None) -> list[str]:
    """The app each browser tab runs: this interpreter's `tavern tui`, same home and model."""
    command = [sys.executable, "-m", "tavern"]
    if home:
        command += ["--home", str(Path(home))]
    if model:
        command += ["--model", model]
    return [*command, "tui"]
