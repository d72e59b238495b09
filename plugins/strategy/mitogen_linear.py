"""The `mitogen_linear` strategy ansible.cfg selects: Mitogen's linear strategy when the
`mitogen` package is installed (requirements.txt pins it), Ansible's own linear otherwise.

Mitogen keeps one Python interpreter per host for the whole run instead of starting one per
task; it halves an idempotent re-run (docs/benchmarks.md). ansible.cfg names the strategy, so
the plugin has to load without Mitogen too, for example in an environment built from another
requirements file. `ANSIBLE_STRATEGY=linear` turns Mitogen off for a run.
"""
from __future__ import annotations

try:
    from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule
except ImportError as exc:
    from ansible.plugins.strategy.linear import StrategyModule  # noqa: F401
    from ansible.utils.display import Display

    Display().warning(f"mitogen is not importable ({exc}); running with Ansible's linear strategy")
