"""The guide's checklist: catalog, verification-suite plugin, compliance report.

- ``checklist.catalog``: load ``catalog.yml``, find the tests that verify each item (markers, by
  AST) and the role tasks that implement it (``ID | ...`` task names).
- ``checklist.pytest_checklist``: pytest plugin recording each marked test's outcome per host.
- ``checklist.report``: compliance report (Markdown, JSON) from those outcomes, the catalog and
  the inventory's attestations.
- ``checklist.inventory``: the hub hosts and attestations of an inventory
  (from ``ansible-inventory --list``).
"""
