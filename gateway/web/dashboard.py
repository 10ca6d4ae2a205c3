"""The read-only dashboard on the admin listener: a login with an admin token, a session cookie, the pages.

* ``GET /dashboard/login`` shows the form; ``POST /dashboard/login`` takes any configured admin token (read or
  operator) and starts a session: a random id in the cookie ``cg_session`` (``HttpOnly``, ``SameSite=Strict``,
  ``Secure`` when the listener speaks TLS), kept in memory for :data:`SESSION_S`. A wrong token answers 401 with
  the form again and is logged with the client's address, never the token.
* Every POST carries a CSRF token in a hidden field: the login form's is tied to a ``cg_form`` cookie set with the
  form (double submit), the logout form's is the session's own; a missing or different one answers 403.
* Pages (gateway.web.pages) answer HTML in Chinese, or English after ``/dashboard/lang/en`` (a ``cg_lang``
  cookie); times are China time; each page reloads itself. Without a session a page redirects to the login.
* ``/dashboard/static/dashboard.css`` is the one asset, read from the package (no CDN).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from gateway.errors import GatewayError
from gateway.logs import redact
from gateway.web.config import AdminToken
from gateway.web.html import LANGS, esc, login_page, page, t
from gateway.web.inbound import tls_subject
from gateway.web.pages import Pages

log = logging.getLogger("gateway.dashboard")
SESSION_COOKIE, FORM_COOKIE, LANG_COOKIE = "cg_session", "cg_form", "cg_lang"
SESSION_S = 8 * 3600.0
MAX_SESSIONS = 1000
PageBuilder = Callable[[Mapping[str, str], str], Awaitable[str]]


@dataclass(frozen=True)
class Session:
    token_name: str
    role: str
    csrf: str
    expires_at: float


class Dashboard:
    """The dashboard's routes; ``check_token`` finds the configured token a text is (constant time)."""

    def __init__(self, pages: Pages, check_token: Callable[[str], AdminToken | None], *, secure: bool) -> None:
        self.pages, self.check_token, self.secure = pages, check_token, secure
        self.sessions: dict[str, Session] = {}
        self._css = (resources.files("gateway.web") / "static" / "dashboard.css").read_bytes()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._home)
        app.router.add_get("/dashboard/login", self._login_form)
        app.router.add_post("/dashboard/login", self._login)
        app.router.add_post("/dashboard/logout", self._logout)
        app.router.add_get("/dashboard/lang/{lang}", self._lang)
        app.router.add_get("/dashboard/static/dashboard.css", self._static)
        pages: dict[str, PageBuilder] = {
            "overview": self.pages.overview, "timeliness": self.pages.timeliness, "quarantine": self.pages.quarantine,
            "lists": self.pages.lists, "sanctions": self.pages.sanctions, "certificates": self.pages.certificates,
            "log": self.pages.log, "record": self.pages.record}
        for name, builder in pages.items():
            path = "/dashboard" if name == "overview" else f"/dashboard/{name}"
            app.router.add_get(path, self._page(name, builder))

    # ------------------------------------------------------------ sessions and cookies

    def _cookie(self, response: web.StreamResponse, name: str, value: str, max_age: float | None = None) -> None:
        response.set_cookie(name, value, path="/", httponly=True, secure=self.secure, samesite="Strict",
                            max_age=int(max_age) if max_age is not None else None)

    def session(self, request: web.Request) -> Session | None:
        sid = request.cookies.get(SESSION_COOKIE, "")
        found = self.sessions.get(sid) if sid else None
        if found is not None and found.expires_at < time.time():
            del self.sessions[sid]
            return None
        return found

    def _start(self, token: AdminToken) -> str:
        now = time.time()
        if len(self.sessions) >= MAX_SESSIONS:  # drop the expired, then the oldest
            for sid in [k for k, s in self.sessions.items() if s.expires_at < now] or [next(iter(self.sessions))]:
                del self.sessions[sid]
        sid = secrets.token_urlsafe(32)
        self.sessions[sid] = Session(token.name, token.role, secrets.token_urlsafe(32), now + SESSION_S)
        return sid

    @staticmethod
    def lang(request: web.Request) -> str:
        lang = request.cookies.get(LANG_COOKIE, "zh")
        return lang if lang in LANGS else "zh"

    @staticmethod
    def _html(text: str, status: int = 200) -> web.Response:
        return web.Response(status=status, text=redact(text), content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                     "Content-Security-Policy": "default-src 'self'; style-src 'self'; "
                                                                "img-src 'self' data:; form-action 'self'",
                                     "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})

    # ------------------------------------------------------------ login and logout

    async def _home(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/dashboard")

    async def _login_form(self, request: web.Request, message: str = "", status: int = 200) -> web.StreamResponse:
        form_token = secrets.token_urlsafe(32)
        response = self._html(login_page(self.lang(request), form_token, message), status)
        self._cookie(response, FORM_COOKIE, form_token, 3600)
        return response

    async def _login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        expected = request.cookies.get(FORM_COOKIE, "")
        if not expected or not hmac.compare_digest(str(form.get("csrf", "")), expected):
            log.warning("dashboard login refused: no or wrong form token", extra={"remote": request.remote})
            return await self._login_form(request, t("bad_form", self.lang(request)), 403)
        token = self.check_token(str(form.get("token", "")).strip())
        if token is None:
            log.warning("dashboard login refused: unknown token",
                        extra={"remote": request.remote, "client": tls_subject(request)})
            return await self._login_form(request, t("bad_token", self.lang(request)), 401)
        log.info("dashboard login", extra={"token": token.name, "remote": request.remote,
                                           "client": tls_subject(request)})
        response = _redirect("/dashboard")
        self._cookie(response, SESSION_COOKIE, self._start(token), SESSION_S)
        response.del_cookie(FORM_COOKIE, path="/")
        return response

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        session = self.session(request)
        form = await request.post()
        if session is None or not hmac.compare_digest(str(form.get("csrf", "")), session.csrf):
            return self._html("<p>forbidden</p>", 403)
        self.sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)
        response = _redirect("/dashboard/login")
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    async def _lang(self, request: web.Request) -> web.StreamResponse:
        lang = request.match_info["lang"]
        if lang not in LANGS:
            raise web.HTTPNotFound()
        response = _redirect("/dashboard" if self.session(request) else "/dashboard/login")
        self._cookie(response, LANG_COOKIE, lang, 365 * 86400)
        return response

    async def _static(self, _request: web.Request) -> web.StreamResponse:
        return web.Response(body=self._css, content_type="text/css", headers={"Cache-Control": "max-age=3600"})

    # ------------------------------------------------------------ pages

    def _page(self, name: str, builder: PageBuilder) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            session = self.session(request)
            if session is None:
                raise web.HTTPFound("/dashboard/login")
            lang = self.lang(request)
            try:
                body = await builder(request.query, lang)
            except GatewayError as exc:
                log.error("dashboard page failed", extra={"page": name, "error": str(exc)})
                body = f'<p class="error">{esc(exc)}</p>'
            return self._html(page(name, lang, body, csrf=session.csrf, who=session.token_name))

        return handle


def _redirect(location: str) -> web.Response:
    """A 303 answer that may carry cookies (an aiohttp HTTPFound must be raised, and then drops them)."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def dashboard_paths(path: str) -> bool:
    """The paths the dashboard answers itself (its own session, not the API's bearer token)."""
    return path == "/" or path == "/dashboard" or path.startswith("/dashboard/")

