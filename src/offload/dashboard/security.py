"""What keeps a page of attacker-written job arguments harmless: CSRF tokens on every action,
and headers that forbid inline script, framing and caching.

The CSRF token is an HMAC of the user's name under a key only the server holds: a page of
another site can make the browser send the dashboard's cookies or Basic credentials, but it
cannot read a dashboard page to learn the token, nor compute one. A cross-site request is
also refused outright where the browser says so (``Sec-Fetch-Site``), before the token is
looked at.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response, status
from fastapi.routing import APIRoute

__all__ = ["CSP", "PAGE_HEADERS", "CsrfGuard", "SecureRoute", "mail_html_headers"]

# No inline script and no script from anywhere but the dashboard itself; nothing may frame
# the dashboard; forms post only to it. Styles come from its own sheet, so an argument
# that smuggles in a <style> (it cannot: everything is escaped) would still not apply.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Job data is sensitive: no shared cache or browser history disk should keep it.
    "Cache-Control": "no-store",
}


def mail_html_headers() -> dict[str, str]:
    """A captured mail's HTML is someone else's document: it gets a policy of its own that
    runs no script and loads nothing from the network, in a sandbox, framed by the dashboard
    only."""
    return {
        "Content-Security-Policy": (
            "default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'; "
            "frame-ancestors 'self'; sandbox"
        ),
        "X-Frame-Options": "SAMEORIGIN",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


class SecureRoute(APIRoute):
    """Every answer of a dashboard route carries the page headers, whatever its handler
    returns; a handler that sets its own (the mail view's) keeps them."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def secured(request: Request) -> Response:
            response = await handler(request)
            for name, value in PAGE_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return secured


class CsrfGuard:
    """Issues and checks the token that every dashboard form posts back."""

    def __init__(self, secret: str | bytes | None = None) -> None:
        if secret is None:
            # One process: a fresh key per start is enough (a reload fetches new pages).
            key = secrets.token_bytes(32)
        else:
            key = secret.encode("utf-8") if isinstance(secret, str) else secret
        self._key = hashlib.sha256(b"offload-dashboard-csrf\0" + key).digest()

    def token(self, user: str) -> str:
        mac = hmac.new(self._key, user.encode("utf-8"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

    def check(self, request: Request, user: str, token: str | None) -> None:
        """Refuse (403) a request another site made, or one without this user's token."""
        if request.headers.get("sec-fetch-site") == "cross-site":
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail="cross-site request refused")
        if not token or not hmac.compare_digest(token, self.token(user)):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail="missing or wrong CSRF token: reload the page and try again",
            )
