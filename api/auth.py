"""Bearer-token authentication with scopes, checked before every request.

A view declares the scope it needs with ``@requires("read" | "jobs" | "admin")`` or
``@requires(None)`` for an open endpoint. A view without a declaration needs ``admin``,
so a forgotten declaration fails closed. Tokens come from ``[[api.tokens]]`` in the
configuration file, which is read again when it changes, so ``wirewatch token create``
and ``revoke`` apply without a restart. Token text is never logged or echoed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, g, request

from api.context import current_tokens
from api.errors import ApiError
from appliance.tokens import grants, verify_token

log = logging.getLogger(__name__)

SCOPE_ATTRIBUTE = "wirewatch_scope"
#: Marks a view that needs no token.
OPEN = None
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="wirewatch"'}

View = TypeVar("View", bound=Callable[..., Any])


def requires(scope: str | None) -> Callable[[View], View]:
    """Declare the token scope a view needs (None: open to every client)."""

    def mark(view: View) -> View:
        setattr(view, SCOPE_ATTRIBUTE, scope)
        return view

    return mark


def required_scope(view: Callable[..., Any]) -> str | None:
    """Return the scope a view needs; undeclared views need admin."""
    return getattr(view, SCOPE_ATTRIBUTE, "admin")


def check_token() -> None:
    """Reject the request with 401 or 403 unless its token grants the view's scope."""
    if request.endpoint is None or request.method == "OPTIONS":
        return  # no route matched, so the 404 or 405 handler responds
    view = current_app.view_functions.get(request.endpoint)
    scope = required_scope(view) if view is not None else "admin"
    if scope is OPEN:
        return

    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise ApiError(401, "missing Authorization header; send 'Authorization: Bearer "
                       "<token>' (create a token with 'wirewatch token create')",
                       "Authorization", None, CHALLENGE)
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, f"unsupported authorization scheme {scheme!r}; send "
                       "'Authorization: Bearer <token>'", "Authorization", scheme, CHALLENGE)

    record = verify_token(current_tokens(), token.strip())
    if record is None:
        log.warning("rejected an invalid or revoked token for %s %s from %s", request.method,
                    request.path, request.remote_addr)
        raise ApiError(401, "invalid or revoked token; create a new one with 'wirewatch "
                       "token create'", "Authorization", None, CHALLENGE)
    if not grants(record, scope):
        raise ApiError(403, f"token {record.id} has scopes {','.join(record.scopes)} but "
                       f"{request.method} {request.path} needs scope {scope}", "scope", scope)
    g.token_id = record.id
