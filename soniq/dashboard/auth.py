"""Who may use the dashboard: a bearer token in the ``Authorization`` header or the session
cookie the login form sets (never a URL parameter); and the CSRF token each POST carries.

Every comparison is constant-time. The cookie holds an HMAC of the token, not the token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.requests import Request

COOKIE = "soniq_dashboard"


class Guard:
    """Checks credentials against ``token`` (None: no auth required)."""

    def __init__(self, token: str | None) -> None:
        self.token = token or None
        # signs the session cookie and CSRF tokens; random per process when there is no token
        key = token.encode() if token else secrets.token_bytes(32)
        self._key = hashlib.sha256(b"soniq-dashboard:" + key).digest()

    def _sign(self, purpose: str) -> str:
        return hmac.new(self._key, purpose.encode(), hashlib.sha256).hexdigest()

    @property
    def session_value(self) -> str:
        return self._sign("session")

    def check_token(self, candidate: str) -> bool:
        if self.token is None:
            return True
        return hmac.compare_digest(candidate.encode(), self.token.encode())

    def allowed(self, request: Request) -> bool:
        """True when the request carries valid credentials (or none are required)."""
        if self.token is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and self.check_token(value.strip()):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return hmac.compare_digest(cookie.encode(), self.session_value.encode())

    @property
    def csrf_token(self) -> str:
        return self._sign("csrf")

    def csrf_ok(self, candidate: str | None) -> bool:
        return bool(candidate) and hmac.compare_digest(
            str(candidate).encode(), self.csrf_token.encode()
        )
