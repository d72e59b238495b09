"""Per-client token buckets, kept in memory (one process serves the API)."""
from __future__ import annotations

import ipaddress
import time
from typing import Callable, Dict, List


def client_bucket(ip: str) -> str:
    """The rate-limit key of a client address: the address for IPv4, the /64 for IPv6.

    One IPv6 host usually holds a whole /64 (SLAAC, privacy addresses), so keying on the full
    address would give it 2^64 buckets. IPv4-mapped addresses count as their IPv4 address."""
    if ":" not in ip:
        return ip
    try:
        addr = ipaddress.IPv6Address(ip)
    except ValueError:
        return ip
    if addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(addr) >> 64 << 64, 64)))


class TokenBuckets:
    def __init__(self, rate_per_second: float, burst: int, clock: Callable[[], float] = time.monotonic, max_clients: int = 100_000) -> None:
        self.rate = rate_per_second
        self.burst = float(burst)
        self.clock = clock
        self.max_clients = max_clients
        self.buckets: Dict[str, List[float]] = {}

    def allow(self, client: str) -> bool:
        now = self.clock()
        bucket = self.buckets.get(client)
        if bucket is None:
            if len(self.buckets) >= self.max_clients:
                self._prune(now)
            self.buckets[client] = [self.burst - 1.0, now]
            return True
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return True
        bucket[0] = tokens
        return False

    def retry_after(self, client: str) -> int:
        bucket = self.buckets.get(client)
        if bucket is None:
            return 0
        missing = max(0.0, 1.0 - bucket[0])
        return max(1, int(missing / self.rate + 0.999))

    def _prune(self, now: float) -> None:
        """Drop buckets that have refilled: forgetting them changes nothing."""
        full = [c for c, (tokens, last) in self.buckets.items() if tokens + (now - last) * self.rate >= self.burst]
        for client in full:
            del self.buckets[client]
        if len(self.buckets) >= self.max_clients:  # a flood of distinct addresses
            for client in list(self.buckets)[: len(self.buckets) // 2]:
                del self.buckets[client]
