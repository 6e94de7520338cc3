"""Bearer-token check. Tokens are configured as SHA-256 digests; compared in constant time."""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

from pinhole.errors import Unauthorized
from pinhole.settings import Auth


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def require_token(request: web.Request, auth: Auth) -> None:
    if auth.allow_anonymous:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Send Authorization: Bearer <token>.")
    presented = token_digest(token.strip())
    # Check every configured digest so timing does not reveal which one matched.
    matched = False
    for expected in auth.token_sha256:
        matched |= hmac.compare_digest(presented, expected.lower())
    if not matched:
        raise Unauthorized("The bearer token is not valid.")
