"""The console's token check, as an ASGI middleware, and the security headers of every answer.

With no token configured (a console bound to a loopback address) every request passes. With a
token, a request passes when it carries one of:

- ``Authorization: Bearer <token>`` (scripts, curl);
- the session cookie: an HMAC of the token, set HttpOnly, SameSite=Strict (Secure over HTTPS),
  so the token itself never sits in the browser's cookie jar and a new token ends old sessions;
  the browser gets it from the login form (``POST /login``) or by opening any page once with
  ``?token=<token>``, which answers a redirect to the same page without the token.

Otherwise API calls get 401 (``WWW-Authenticate: Bearer``) and pages a redirect to ``/login``.
Every comparison is constant-time (`hmac.compare_digest`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

COOKIE = "segflow_console"
SESSION_MAX_AGE_S = 12 * 3600
OPEN_PATHS = ("/login", "/static/", "/healthz")
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class TokenCheck:
    """Compares what a request carries with the configured token, in constant time."""

    def __init__(self, token: str | None) -> None:
        self._token = (token or "").encode()

    @property
    def required(self) -> bool:
        return bool(self._token)

    def token_ok(self, given: str | None) -> bool:
        return bool(self._token) and hmac.compare_digest((given or "").encode(), self._token)

    def bearer_ok(self, authorization: str | None) -> bool:
        scheme, _, value = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(value.strip())

    def session_value(self) -> str:
        """The cookie's value: an HMAC of the token (the token itself never goes in it)."""
        return hmac.new(self._token, b"segflow-console-session", hashlib.sha256).hexdigest()

    def cookie_ok(self, cookie_header: str | None) -> bool:
        if not self._token or not cookie_header:
            return False
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(cookie_header)
        except Exception:  # a garbled Cookie header is no session
            return False
        morsel = jar.get(COOKIE)
        return morsel is not None and hmac.compare_digest(
            morsel.value.encode(), self.session_value().encode()
        )

    def set_cookie_header(self, secure: bool) -> bytes:
        attrs = f"{COOKIE}={self.session_value()}; Path=/; HttpOnly; SameSite=Strict"
        attrs += f"; Max-Age={SESSION_MAX_AGE_S}"
        return (attrs + ("; Secure" if secure else "")).encode()


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class TokenMiddleware:
    """Lets a request through when `TokenCheck` accepts it; adds `SECURITY_HEADERS` always."""

    def __init__(self, app: ASGIApp, check: TokenCheck) -> None:
        self.app = app
        self.check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        path: str = scope.get("path", "")
        if not self.check.required or path.startswith(OPEN_PATHS):
            await self.app(scope, receive, send_secured)
            return
        headers = _headers(scope)
        if self.check.bearer_ok(headers.get("authorization")) or self.check.cookie_ok(
            headers.get("cookie")
        ):
            await self.app(scope, receive, send_secured)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
        given = [v for k, v in query if k == "token"]
        if given and self.check.token_ok(given[-1]):
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            here = "/" + path.lstrip("/")  # never "//host": a redirect stays on this site
            location = (here + ("?" + rest if rest else "")).encode()
            secure = scope.get("scheme") == "https"
            await _answer(
                send_secured,
                303,
                b"",
                [(b"location", location), (b"set-cookie", self.check.set_cookie_header(secure))],
            )
            return
        if given or path.startswith("/api/"):
            await _answer(
                send_secured,
                401,
                b'{"error": "a valid bearer token or console session is required"}',
                [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
            )
            return
        await _answer(send_secured, 303, b"", [(b"location", b"/login")])
