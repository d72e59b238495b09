"""The pathological requests of issue 13, in one place: the regression tests (test_bounded.py)
send each to the real server and time it against a concurrent health check, and the load
benchmark (bench/app_load.py) measures the server CPU each one costs."""
from __future__ import annotations

import json
from typing import List, Optional, Tuple

MIB = 1024 * 1024
LOGIN = "/api/auth/login"


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# Unauthenticated: (name, path, body, expected status, expected fragment of the error or reason).
PATHOLOGICAL: List[Tuple[str, str, bytes, int, Optional[str]]] = [
    # The two bodies the issue measured: 5.2 s and 18.6 s of a blocked event loop.
    ("login username '<' + 8,000 spaces", LOGIN,
     json.dumps({"username": "<" + " " * 8000, "password": "x"}).encode(), 422, "username"),
    ("login username '<' + 16,000 spaces", LOGIN,
     json.dumps({"username": "<" + " " * 16000, "password": "x"}).encode(), 422, "username"),
    ("login username '<' + 1 MiB of spaces", LOGIN,
     json.dumps({"username": "<" + " " * (MIB - 100), "password": "x"}).encode(), 422, "username"),
    # The 500.
    ("5,000 '['", LOGIN, b"[" * 5000, 400, "nested"),
    ("1 MiB of '['", LOGIN, b"[" * (MIB - 1), 400, "values"),
    ("nesting of 900 lists (below the parser's recursion limit)", LOGIN, _nested(900), 400, "nested"),
    ("nesting of 17 objects", LOGIN, b'{"a":' * 17 + b"1" + b"}" * 17, 400, "nested"),
    ("1 MiB of zeros in a list", LOGIN, b"[" + b"0," * (MIB // 2 - 2) + b"0]", 400, "values"),
    ("invalid UTF-8", LOGIN, b'{"username": "\xff\xfe", "password": "x"}', 400, "malformed"),
    ("not JSON", LOGIN, b"{username: x}", 400, "malformed"),
    ("9,000 strings of '<' and spaces", LOGIN, json.dumps(["<" + " " * 100] * 9000).encode(), 422, None),
    ("'on' + 1 MiB of letters in a key", LOGIN, json.dumps({"on" + "a" * (MIB - 100): 1}).encode(), 422, None),
    ("'select ' repeated over 1 MiB", LOGIN,
     json.dumps({"username": "select " * (MIB // 8), "password": "x"}).encode(), 422, None),
]

# Authenticated (an operator's credentials): (name, path, body, expected status).
PATHOLOGICAL_AUTHENTICATED: List[Tuple[str, str, bytes, int]] = [
    ("task description '<' + 1 MiB of spaces", "/api/tasks",
     json.dumps({"description": "<" + " " * (MIB - 200)}).encode(), 422),
    ("task description 'javascript:' over 1 MiB", "/api/tasks",
     json.dumps({"description": "javascript:" * (MIB // 12)}).encode(), 422),
]
