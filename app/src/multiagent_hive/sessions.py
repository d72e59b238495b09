"""Sessions beyond a single request: the per-account login backoff, WebSocket tickets, and open
WebSockets that are closed when the credential behind them expires or is revoked.

All state here is in memory and bounded: one process serves the API."""
from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

# Login backoff: this many failures of one account from one source are free; after that each
# attempt waits BACKOFF_BASE * 2^(n - FREE) seconds after the last failure, at most BACKOFF_MAX.
BACKOFF_FREE_FAILURES = 5
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 900.0
BACKOFF_MAX_ENTRIES = 100_000

TICKET_PREFIX = "wst_"
TICKET_SECONDS = 30.0
TICKET_MAX = 10_000
TICKETS_PER_USER = 20

# Close codes of an open WebSocket whose credential ends (RFC 6455 1008: policy violation).
CLOSE_SESSION_ENDED = 1008


class LoginBackoff:
    """Progressive delay per (account, source). A source is an IPv4 address or an IPv6 /64.

    Keyed by account *and* source on purpose: a per-account lockout would let anyone lock an
    admin out from everywhere with a few wrong passwords. Here a guesser slows down only its own
    attempts on that account; the admin from any other address is not delayed (docs/deviations.md)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        # (username, source) -> [failures, time of the last failure, time the block was last audited]
        self.entries: Dict[Tuple[str, str], List[float]] = {}

    @staticmethod
    def delay_after(failures: int) -> float:
        if failures < BACKOFF_FREE_FAILURES:
            return 0.0
        return min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** (failures - BACKOFF_FREE_FAILURES))

    def wait(self, username: str, source: str) -> float:
        """Seconds until this source may try this account again (0: now)."""
        entry = self.entries.get((username, source))
        if entry is None:
            return 0.0
        return max(0.0, entry[1] + self.delay_after(int(entry[0])) - self.clock())

    def should_audit_block(self, username: str, source: str) -> bool:
        """One LoginBackoff line per blocked window, not one per refused attempt."""
        entry = self.entries.get((username, source))
        if entry is None or entry[2] >= entry[1]:
            return False
        entry[2] = self.clock()
        return True

    def failed(self, username: str, source: str) -> float:
        """Record a failure; the delay it starts (0 while failures are still free)."""
        now = self.clock()
        key = (username, source)
        entry = self.entries.get(key)
        if entry is None:
            if len(self.entries) >= BACKOFF_MAX_ENTRIES:
                self._prune(now)
            entry = self.entries[key] = [0.0, now, float("-inf")]
        entry[0] += 1
        entry[1] = now
        return self.delay_after(int(entry[0]))

    def succeeded(self, username: str, source: str) -> None:
        self.entries.pop((username, source), None)

    def _prune(self, now: float) -> None:
        # An entry whose delay has passed twice over is as good as new: forget it.
        stale = [k for k, (n, last, _entry) in self.entries.items() if now - last > 2 * self.delay_after(int(n)) + 60]
        for key in stale:
            del self.entries[key]
        if len(self.entries) >= BACKOFF_MAX_ENTRIES:
            for key in list(self.entries)[: len(self.entries) // 2]:
                del self.entries[key]


@dataclass
class Ticket:
    expires: float
    user_id: int
    subject: str
    generation: int
    # What the ticket was bought with: a JWT (its expiry, wall clock) or an API key (its digest).
    session_exp: Optional[float]
    key_digest: Optional[str]


class WsTickets:
    """Single-use WebSocket tickets, valid TICKET_SECONDS. Only a hash is kept in memory; a
    ticket is accepted by `/ws` only, never as a credential elsewhere."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.tickets: Dict[str, Ticket] = {}

    @staticmethod
    def _digest(ticket: str) -> str:
        return hashlib.sha256(ticket.encode("utf-8", "replace")).hexdigest()

    def issue(self, user: Dict[str, Any], session_exp: Optional[float], key_digest: Optional[str]) -> Optional[str]:
        """A new ticket, or None when the user (or everyone) holds too many unused ones."""
        now = self.clock()
        if len(self.tickets) >= TICKET_MAX or sum(t.user_id == user["id"] for t in self.tickets.values()) >= TICKETS_PER_USER:
            self._prune(now)
            if len(self.tickets) >= TICKET_MAX or sum(t.user_id == user["id"] for t in self.tickets.values()) >= TICKETS_PER_USER:
                return None
        ticket = TICKET_PREFIX + secrets.token_urlsafe(32)
        self.tickets[self._digest(ticket)] = Ticket(
            now + TICKET_SECONDS, int(user["id"]), str(user["subject"]), int(user["token_generation"]),
            session_exp, key_digest,
        )
        return ticket

    def redeem(self, ticket: str) -> Optional[Ticket]:
        """The ticket's data, once; None when unknown, used or expired."""
        if not ticket.startswith(TICKET_PREFIX) or len(ticket) > 100:
            return None
        found = self.tickets.pop(self._digest(ticket), None)
        if found is None or found.expires <= self.clock():
            return None
        return found

    def _prune(self, now: float) -> None:
        for digest in [d for d, t in self.tickets.items() if t.expires <= now]:
            del self.tickets[digest]


@dataclass(eq=False)
class SocketSession:
    """An open WebSocket and the credential it was opened with."""

    user_id: int
    subject: str
    generation: int
    session_exp: Optional[float]  # wall clock; None for an API key
    key_digest: Optional[str]
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""

    def end(self, reason: str) -> None:
        """Ask the socket to re-check its credential now; `reason` names the change."""
        if not self.ended.is_set():
            self.reason = reason
            self.ended.set()


class OpenSockets:
    """Open WebSockets by user, so that a revocation in this process closes them at once; a
    revocation by another process (the CLI) is seen by each socket's periodic re-check."""

    def __init__(self) -> None:
        self.by_user: Dict[int, Set[SocketSession]] = {}

    def add(self, session: SocketSession) -> None:
        self.by_user.setdefault(session.user_id, set()).add(session)

    def discard(self, session: SocketSession) -> None:
        sessions = self.by_user.get(session.user_id)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self.by_user[session.user_id]

    def count(self, user_id: int) -> int:
        return len(self.by_user.get(user_id, ()))

    def end_user(self, user_id: int, reason: str) -> int:
        sessions = list(self.by_user.get(user_id, ()))
        for session in sessions:
            session.end(reason)
        return len(sessions)
