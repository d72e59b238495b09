"""Password hashing (argon2id), JWTs (HS256 only) and API keys (HMAC-SHA256, shown once)."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from typing import Any, Dict, Optional, Tuple

import jwt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from .config import Settings

JWT_ALGORITHM = "HS256"
JWT_ISSUER = "ai-orchestrator-hub"
JWT_AUDIENCE = "ai-orchestrator-api"
API_KEY_PREFIX = "hive_"
ROLES = ("viewer", "operator", "admin")
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}


class Passwords:
    def __init__(self, settings: Settings) -> None:
        self.hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            type=Type.ID,
        )
        # Verified against when the user does not exist, so both paths cost the same.
        self._dummy = self.hasher.hash(secrets.token_hex(16))

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify(self, stored: Optional[str], password: str) -> bool:
        try:
            return self.hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False


class Tokens:
    def __init__(self, settings: Settings) -> None:
        self.secret = settings.jwt_secret.encode("utf-8")
        self.expiry = settings.jwt_expiry_seconds
        # Verified claims by token: signature checks dominate the request cost otherwise.
        # Expiry is re-checked on every hit; revocation is the caller's user lookup.
        self._verified: Dict[str, Dict[str, Any]] = {}

    def issue(self, user_id: int, role: str) -> Tuple[str, int]:
        now = int(time.time())
        claims = {
            "sub": str(user_id),
            "role": role,
            "iat": now,
            "nbf": now,
            "exp": now + self.expiry,
            "iss": JWT_ISSUER,
            "aud": JWT_AUDIENCE,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.secret, algorithm=JWT_ALGORITHM), self.expiry

    def decode(self, token: str) -> Optional[Dict[str, Any]]:
        """Claims of a valid token, None otherwise. Only HS256 is accepted (no `none`)."""
        cached = self._verified.get(token)
        if cached is not None:
            if cached["exp"] > time.time():
                return cached
            del self._verified[token]
            return None
        try:
            claims: Dict[str, Any] = jwt.decode(
                token,
                self.secret,
                algorithms=[JWT_ALGORITHM],
                audience=JWT_AUDIENCE,
                issuer=JWT_ISSUER,
                options={"require": ["exp", "iat", "sub", "iss", "aud", "jti"]},
            )
        except jwt.PyJWTError:
            return None
        if len(self._verified) >= 4096:
            self._verified.clear()
        self._verified[token] = claims
        return claims


class ApiKeys:
    def __init__(self, settings: Settings) -> None:
        self.secret = settings.api_encryption_key.encode("utf-8")

    def new(self) -> str:
        return API_KEY_PREFIX + secrets.token_urlsafe(32)

    def digest(self, key: str) -> str:
        """What is stored: a keyed hash, so a leaked database alone reveals no usable key."""
        return hmac.new(self.secret, key.encode("utf-8"), hashlib.sha256).hexdigest()


def new_pseudonym() -> str:
    """A random per-user pseudonym, the only user reference in the flat audit log.

    The mapping pseudonym -> user lives only in the users table, so erasing the user makes
    every audit line about them unlinkable."""
    return "u-" + secrets.token_hex(8)


def role_at_least(role: str, needed: str) -> bool:
    return ROLE_RANK.get(role, -1) >= ROLE_RANK[needed]
