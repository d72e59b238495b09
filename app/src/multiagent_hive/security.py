"""Password hashing (argon2id), JWTs (HS256 only) and API keys (HMAC-SHA256, shown once)."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Optional, Tuple, TypeVar

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


T = TypeVar("T")
# Niceness added to the hashing threads: when logins saturate the pool, the event loop's thread still
# gets the CPU first, so health and every other request keep answering.
HASHING_NICENESS = 10


def _lower_thread_priority() -> None:
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + HASHING_NICENESS))
    except (AttributeError, OSError):  # not Linux, or not permitted: only slower to yield
        pass


class HashingBusy(Exception):
    """The password-hashing pool is full: answer 503 with Retry-After, do no argon2 work."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("password hashing is busy")
        self.retry_after = retry_after


class Passwords:
    """argon2id hashing. `hash`/`verify` block (CLI, tests); the service calls
    `await hash_async(...)` / `await verify_async(...)`, which run in a bounded thread pool
    (argon2-cffi releases the GIL) so the event loop keeps answering meanwhile. At most
    `argon2_workers` hashes run and `argon2_queue` wait; beyond that HashingBusy is raised at
    once, so a login flood costs neither unbounded memory (19 MiB per running hash) nor
    unbounded latency."""

    def __init__(self, settings: Settings) -> None:
        self.hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            type=Type.ID,
        )
        # Verified against when the user does not exist, so both paths cost the same.
        self._dummy = self.hasher.hash(secrets.token_hex(16))
        self.workers = max(1, settings.argon2_workers)
        self.limit = self.workers + max(0, settings.argon2_queue)
        self._in_flight = 0
        self._lock = threading.Lock()
        self._pool: Optional[ThreadPoolExecutor] = None

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify(self, stored: Optional[str], password: str) -> bool:
        try:
            return self.hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    @property
    def in_flight(self) -> int:
        """Hashes running or waiting in the pool."""
        return self._in_flight

    def check_capacity(self) -> None:
        """Raise HashingBusy now if a hash would be refused: lets a caller skip its other work."""
        if self._in_flight >= self.limit:
            raise HashingBusy(retry_after=1)

    async def hash_async(self, password: str) -> str:
        """hash() in the pool; raises HashingBusy when the pool and its queue are full."""
        return await self._offload(self.hash, password)

    async def verify_async(self, stored: Optional[str], password: str) -> bool:
        """verify() in the pool; raises HashingBusy when the pool and its queue are full."""
        return await self._offload(self.verify, stored, password)

    async def _offload(self, func: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self._in_flight >= self.limit:
                # Queued work drains at about `workers` hashes per hash time; a second is the
                # order of magnitude at the default cost, and clients should not retry sooner.
                raise HashingBusy(retry_after=1)
            self._in_flight += 1
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.workers, thread_name_prefix="argon2", initializer=_lower_thread_priority
                )
            pool = self._pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, func, *args)
        finally:
            with self._lock:
                self._in_flight -= 1

    def close(self) -> None:
        """Stop the pool's threads (after the running hashes finish)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


class Tokens:
    def __init__(self, settings: Settings) -> None:
        self.secret = settings.jwt_secret.encode("utf-8")
        self.expiry = settings.jwt_expiry_seconds
        # Verified claims by token: signature checks dominate the request cost otherwise.
        # Expiry is re-checked on every hit; revocation is the caller's user lookup.
        self._verified: Dict[str, Dict[str, Any]] = {}

    def issue(self, subject: str, generation: int, role: str) -> Tuple[str, int]:
        """A token for the user with this random `subject` (never the row id: a restored
        database hands row ids to new users) at this token generation (moved on by password
        and role changes, disable and revoke, which ends every earlier token)."""
        now = int(time.time())
        claims = {
            "sub": subject,
            "gen": generation,
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
        if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("gen"), int):
            return None  # a token of an earlier release (integer row id, no generation)
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
