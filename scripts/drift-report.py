#!/usr/bin/env python3
"""Summarise a `--check --diff` run of the playbook: per host, which managed artifacts drifted.

Usage and exit status: `drift-report.py --help`, or the docstring of hubtools/drift.py, where
the parsing, the drift list and this command line live.
"""
from __future__ import annotations

import sys
from pathlib import Path

# hubtools is not installed: it sits at the repository root, beside scripts/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hubtools.drift import main

if __name__ == "__main__":
    sys.exit(main())
