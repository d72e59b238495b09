#!/usr/bin/env python3
"""Summarise a `--check --diff` run of the playbook: per host, which managed artifacts drifted.

    drift-report.py LOG                 per host, one line per changed task: the artifact it
                                        touches (file path, loop item) and its count of diff lines
    drift-report.py LOG --expect-all [--drifts FILE]
                                        also check that every drift listed in FILE (default
                                        molecule/shared/drifts.yml, what inject-drift.yml did)
                                        was reported on every host
    drift-report.py --operator-steps [--drifts FILE]
                                        print the playbooks an operator runs with the repair
                                        run (a drift's `operator_step`: what no run repairs by
                                        itself, such as a lost admin password), one per line

LOG is ansible-playbook's output or its ANSIBLE_LOG_PATH file (Molecule's boxed output works too).

Exit status:
  0  no drift (every host changed=0), or with --expect-all: every listed drift was reported
  3  drift: some host would change (without --expect-all)
  1  the run failed (a failed or unreachable host, or no PLAY RECAP: it did not finish), or
     with --expect-all: a listed drift was not reported on some host
  2  usage error (unreadable log or drifts file)

The parsing, the drift list and this command line live in hubtools (hubtools/drift.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

# hubtools is not installed: it sits at the repository root, beside scripts/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hubtools.drift import main

if __name__ == "__main__":
    sys.exit(main())
