#!/usr/bin/env python3
"""Read an ansible-playbook log and summarise what changed, per host.

    recap.py LOG --expect-unchanged   exit 1 unless every host has changed=0 failed=0 unreachable=0
    recap.py LOG --expect-changed     exit 1 unless some task changed on every host (a drift run)

Used after the idempotence run, after the `--check --diff` run and by `make drift`, so that
an operator reads a few lines per host instead of thousands of lines of diff.

The parsing and the summary live in hubtools (hubtools/recap.py, hubtools/ansible_log.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

# hubtools is not installed: it sits at the repository root, beside scripts/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hubtools.recap import main

if __name__ == "__main__":
    sys.exit(main())
