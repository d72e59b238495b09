"""The project's controller-side tools that scripts and benches share.

ansible_log  reading ansible-playbook's output: PLAY RECAP counts, per-task results
recap        the per-host summary of a run (scripts/recap.py)
drift        what a `--check --diff` run says drifted, per host (scripts/drift-report.py)

Standard library only (the drift list is read with PyYAML, imported when needed): the scripts
run with whichever python3 is first on PATH. Not installed: a script puts the repository root on
sys.path first.
"""
