# Copyright: hub-provision maintainers
# MIT License (see LICENSE)
"""The `mitogen_linear` strategy ansible.cfg selects: Mitogen's linear strategy when the
`mitogen` package is installed (requirements.txt pins it), Ansible's own linear otherwise.

Mitogen keeps one Python interpreter per host for the whole run instead of starting one per
task; it halves an idempotent re-run (docs/benchmarks.md). ansible.cfg names the strategy, so
the plugin has to load without Mitogen too, for example in an environment built from another
requirements file. `ANSIBLE_STRATEGY=linear` turns Mitogen off for a run.
"""
from __future__ import annotations

DOCUMENTATION = r"""
name: mitogen_linear
short_description: Mitogen's linear strategy, or Ansible's linear strategy without Mitogen
description:
  - Runs each task on every host before the next task, as Ansible's C(ansible.builtin.linear) does.
  - When the C(mitogen) Python package is installed on the controller, the run goes through
    Mitogen, which keeps one Python interpreter per host for the whole play instead of starting
    one per task (about half the time of an idempotent re-run).
  - Without Mitogen it is Ansible's own linear strategy, with a warning when the play starts,
    so that a configuration naming this strategy works in any controller environment.
  - Select it with C(strategy = hub.provision.mitogen_linear) in C(ansible.cfg) or
    C(ANSIBLE_STRATEGY); C(ANSIBLE_STRATEGY=linear) turns Mitogen off for one run.
author: hub-provision maintainers (@hub-provision)
notes:
  - Mitogen 0.3.54 is the release tested with ansible-core 2.19.
seealso:
  - plugin: ansible.builtin.linear
    plugin_type: strategy
"""

from typing import Any  # noqa: E402 - ansible-test wants DOCUMENTATION above every import

try:
    from ansible_mitogen.plugins.strategy import mitogen_linear as _implementation
except ImportError as exc:
    from ansible.plugins.strategy import linear as _fallback
    from ansible.utils.display import Display

    _REASON = str(exc)

    class StrategyModule(_fallback.StrategyModule):
        """Ansible's linear strategy; the warning comes when a play uses it, not on every load
        of the plugin (ansible-doc, the import check)."""

        def __init__(self, tqm: Any) -> None:
            Display().warning(f"mitogen is not importable ({_REASON}); running with Ansible's linear strategy")
            super().__init__(tqm)
else:
    StrategyModule = _implementation.StrategyModule
