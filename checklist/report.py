"""Compliance report: every catalog item as PASS, FAIL, SKIP or MANUAL, per host, with evidence.

    python3 -m checklist.report --results RESULTS.json [--inventory SUMMARY.json]
        --out reports/compliance-NAME [--name NAME] [--junit FILE] [--host-label SPEC=NAME ...]
    python3 -m checklist.report --check-attestations --inventory SUMMARY.json

RESULTS.json comes from the pytest plugin ``checklist.pytest_checklist``; SUMMARY.json from
``checklist.inventory`` (the hub hosts and ``hub_attestations``). Writes OUT.md (people) and
OUT.json (machines); the JUnit XML is pytest's own (``--junitxml``), named in both.

Per host, an automated item is PASS when at least one of its tests passed and none failed,
FAIL when a test failed or errored (the evidence is the assertion message: what was expected,
what was found) or when no test for it ran at all, SKIP when all its tests were skipped (the
reason is the evidence). Over all hosts: FAIL if any host fails, PASS if every host passes,
SKIP otherwise. Manual items are MANUAL, attested (who, when, reference) or not attested.

Exit status: 0 no FAIL; 1 at least one FAIL; 2 the inputs are unusable (no results, or an
attestation that names an unknown or automated item, lacks a field or has a malformed date:
the message names the ID).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from checklist.catalog import CATALOG, MANUAL_FIELDS, load_catalog

PASS, FAIL, SKIP, MANUAL = "PASS", "FAIL", "SKIP", "MANUAL"


class InputError(Exception):
    """Inputs that cannot make a report (exit 2)."""


def validate_attestations(
    attestations: Any, items: List[Dict[str, Any]], today: Optional[dt.date] = None
) -> List[str]:
    """Every problem with ``hub_attestations``, each naming the ID."""
    today = today or dt.date.today()
    if attestations in (None, ""):
        return []
    if not isinstance(attestations, dict):
        return ["hub_attestations must be a mapping of checklist ID to {by, date, reference}"]
    by_id = {str(i["id"]): i for i in items}
    errors = []
    for item_id, entry in attestations.items():
        where = f"hub_attestations.{item_id}"
        item = by_id.get(str(item_id))
        if item is None:
            errors.append(f"{where}: {item_id} is not a checklist ID in the catalog")
            continue
        if not item.get("manual", False):
            errors.append(
                f"{where}: {item_id} is verified by tests, it cannot be attested instead"
            )
            continue
        if not isinstance(entry, dict):
            errors.append(f"{where}: expected a mapping with {', '.join(MANUAL_FIELDS)}")
            continue
        for key in MANUAL_FIELDS:
            value = entry.get(key)
            if value is None or (isinstance(value, str) and not value.strip()):
                errors.append(f"{where}: missing '{key}'")
        extra = sorted(set(entry) - set(MANUAL_FIELDS))
        if extra:
            errors.append(f"{where}: unknown field(s) {', '.join(extra)}")
        date = entry.get("date")
        if date is not None and not (isinstance(date, str) and not date.strip()):
            parsed = _parse_date(date)
            if parsed is None:
                errors.append(f"{where}: date {date!r} is not a calendar date YYYY-MM-DD")
            elif parsed > today:
                errors.append(f"{where}: date {parsed.isoformat()} is in the future")
    return errors


def _parse_date(value: Any) -> Optional[dt.date]:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    if len(text) != 10:
        return None
    try:
        return dt.datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        return None


def _host_status(records: List[Dict[str, Any]]) -> str:
    outcomes = {r["outcome"] for r in records}
    if not records or outcomes & {"failed", "error"}:
        return FAIL
    if "passed" in outcomes:
        return PASS
    return SKIP


def build(
    items: List[Dict[str, Any]],
    results: Dict[str, Any],
    attestations: Dict[str, Any],
    hosts: List[str],
    name: str,
    host_labels: Optional[Dict[str, str]] = None,
    junit: Optional[str] = None,
    unreachable: Optional[Dict[str, str]] = None,
) -> Dict[str, Any]:
    labels = host_labels or {}
    unreachable = unreachable or {}
    records = []
    for rec in results.get("results", []):
        rec = dict(rec)
        raw = rec.get("host")
        rec["host"] = labels.get(raw, raw) if raw is not None else None
        records.append(rec)
    if not hosts:
        hosts = sorted({r["host"] for r in records if r["host"] is not None})
    known = {str(i["id"]) for i in items}
    unknown = sorted({i for r in records for i in r["ids"] if i not in known})

    out_items = []
    for item in items:
        item_id = str(item["id"])
        entry: Dict[str, Any] = {
            "id": item_id,
            "section": item["section"],
            "item": item["item"],
            "controls": list(item.get("controls", [])),
            "manual": bool(item.get("manual", False)),
            "beyond_guide": bool(item.get("beyond_guide", False)),
        }
        if entry["manual"]:
            att = attestations.get(item_id)
            entry["status"] = MANUAL
            entry["attested"] = att is not None
            entry["evidence_needed"] = item.get("evidence", "")
            if att is not None:
                entry["attestation"] = {k: str(att[k]) for k in MANUAL_FIELDS}
            out_items.append(entry)
            continue
        per_host = {}
        for host in hosts:
            mine = [
                r for r in records if item_id in r["ids"] and r["host"] in (host, None)
            ]
            status = _host_status(mine)
            tests = [
                {k: r.get(k) for k in ("test", "nodeid", "outcome", "message")} for r in mine
            ]
            host_entry: Dict[str, Any] = {"status": status, "tests": tests}
            if host in unreachable:
                host_entry["message"] = f"not verified: host unreachable: {unreachable[host]}"
            elif not mine:
                host_entry["message"] = (
                    f"not verified: no test marked checklist({item_id!r}) ran on this host"
                )
            per_host[host] = host_entry
        statuses = {h["status"] for h in per_host.values()}
        if not per_host or FAIL in statuses:
            entry["status"] = FAIL
        elif statuses == {PASS}:
            entry["status"] = PASS
        else:
            entry["status"] = SKIP
        entry["hosts"] = per_host
        out_items.append(entry)

    totals = {PASS: 0, FAIL: 0, SKIP: 0, MANUAL: 0, "attested": 0, "not_attested": 0}
    for entry in out_items:
        totals[entry["status"]] += 1
        if entry["manual"]:
            totals["attested" if entry["attested"] else "not_attested"] += 1
    return {
        "inventory": name,
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "hosts": hosts,
        "result": FAIL if totals[FAIL] else PASS,
        "totals": totals,
        "junit": junit,
        "unreachable": dict(unreachable),
        "unknown_ids_in_tests": unknown,
        "items": out_items,
    }


def _cell(text: Any, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    if len(flat) > limit:
        flat = flat[: limit - 5] + " [...]"
    return flat.replace("|", "\\|")


def _evidence(entry: Dict[str, Any]) -> str:
    if entry["manual"]:
        if entry["attested"]:
            att = entry["attestation"]
            return f"attested by {att['by']} on {att['date']} ({att['reference']})"
        return f"not attested: needs {entry['evidence_needed']}"
    parts = []
    for host, data in entry["hosts"].items():
        bad = [t for t in data["tests"] if t["outcome"] != "passed"]
        if data["status"] == PASS:
            passed = [t for t in data["tests"] if t["outcome"] == "passed"]
            text = f"{host}: {len(passed)} test(s) passed"
            # A check that cannot run on this host (a container, say) is named with its reason.
            if bad:
                text += "; " + "; ".join(f"{t['test']} {t['outcome']}: {t['message']}" for t in bad)
            parts.append(text)
        elif "message" in data:
            parts.append(f"{host}: {data['message']}")
        else:
            parts.append(
                f"{host}: " + "; ".join(f"{t['test']} {t['outcome']}: {t['message']}" for t in bad)
            )
    return "; ".join(parts)


def totals_line(report: Dict[str, Any]) -> str:
    t = report["totals"]
    return (
        f"{report['result']}: PASS {t[PASS]}, FAIL {t[FAIL]}, SKIP {t[SKIP]}, "
        f"MANUAL {t[MANUAL]} (attested {t['attested']}, not attested {t['not_attested']})"
    )


def markdown(report: Dict[str, Any]) -> str:
    lines = [
        f"# Compliance report: {report['inventory']}",
        "",
        f"Generated {report['generated']} for {len(report['hosts'])} host(s): "
        + ", ".join(f"`{h}`" for h in report["hosts"])
        + f". Catalog: {len(report['items'])} items.",
        "",
        f"**{totals_line(report)}**",
        "",
    ]
    if report.get("junit"):
        lines += [f"Test-level results (JUnit XML): `{report['junit']}`.", ""]
    if report.get("unreachable"):
        lines += ["## Unreachable hosts (not verified)", ""]
        lines += [f"- `{h}`: {_cell(why, 500)}" for h, why in report["unreachable"].items()]
        lines.append("")
    failed = [e for e in report["items"] if e["status"] == FAIL]
    if failed:
        lines += ["## Failures", ""]
        for entry in failed:
            lines.append(f"### {entry['id']}: {entry['item']}")
            lines.append("")
            for host, data in entry["hosts"].items():
                if data["status"] != FAIL:
                    continue
                if "message" in data:
                    lines.append(f"- `{host}`: {_cell(data['message'], 1000)}")
                for test in data["tests"]:
                    if test["outcome"] in ("failed", "error"):
                        lines.append(
                            f"- `{host}` `{test['test']}` {test['outcome']}: "
                            f"{_cell(test['message'], 1000)}"
                        )
            lines.append("")
    unattested = [e for e in report["items"] if e["manual"] and not e["attested"]]
    if unattested:
        lines += [
            "## Manual items not attested",
            "",
            "Process items an operator attests in the inventory variable `hub_attestations` "
            "(see docs/compliance.md).",
            "",
            "| ID | item | section | evidence needed |",
            "| --- | --- | --- | --- |",
        ]
        for e in unattested:
            lines.append(
                f"| {e['id']} | {_cell(e['item'])} | {_cell(e['section'])} | "
                f"{_cell(e['evidence_needed'])} |"
            )
        lines.append("")
    skipped = [e for e in report["items"] if e["status"] == SKIP]
    if skipped:
        lines += ["## Skipped (not verified on every host)", ""]
        for e in skipped:
            lines.append(f"- {e['id']} {_cell(e['item'])}: {_cell(_evidence(e), 600)}")
        lines.append("")
    if report.get("unknown_ids_in_tests"):
        lines += [
            "## Tests naming IDs not in the catalog",
            "",
            ", ".join(report["unknown_ids_in_tests"]),
            "",
        ]
    lines += [
        "## All items",
        "",
        "| ID | status | item | controls | evidence |",
        "| --- | --- | --- | --- | --- |",
    ]
    for e in report["items"]:
        status = e["status"]
        if e["manual"]:
            status += " (attested)" if e["attested"] else " (not attested)"
        lines.append(
            f"| {e['id']} | {status} | {_cell(e['item'])}{' (beyond the guide)' if e.get('beyond_guide') else ''} "
            f"| {_cell(', '.join(e['controls']))} "
            f"| {_cell(_evidence(e))} |"
        )
    return "\n".join(lines) + "\n"


def _load_json(path: Optional[str], what: str) -> Any:
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the {what} {path}: {exc}") from exc


def _labels(specs: List[str]) -> Dict[str, str]:
    out = {}
    for spec in specs:
        raw, sep, label = spec.partition("=")
        if not sep:
            raise InputError(f"--host-label {spec!r}: expected TESTINFRA_HOST=NAME")
        out[raw] = label
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", default=str(CATALOG))
    parser.add_argument("--results", help="JSON written by checklist.pytest_checklist")
    parser.add_argument("--inventory", help="JSON written by checklist.inventory")
    parser.add_argument("--out", help="output path without extension (.md and .json are added)")
    parser.add_argument("--name", help="inventory name shown in the report")
    parser.add_argument("--junit", help="path of pytest's JUnit XML, named in the report")
    parser.add_argument("--host-label", action="append", default=[], metavar="HOST=NAME",
                        help="show testinfra host HOST as NAME (e.g. a container as its inventory name)")
    parser.add_argument("--unreachable", action="append", default=[], metavar="HOST=REASON",
                        help="a host that could not be reached: every item FAILs there, with REASON")
    parser.add_argument("--check-attestations", action="store_true",
                        help="only validate hub_attestations, write nothing")
    args = parser.parse_args(argv)
    try:
        items = load_catalog(Path(args.catalog))
        summary = _load_json(args.inventory, "inventory summary")
        attestations = summary.get("attestations", {}) or {}
        errors = validate_attestations(attestations, items)
        if errors:
            raise InputError("invalid attestations:\n  " + "\n  ".join(errors))
        if args.check_attestations:
            return 0
        if not args.results or not args.out:
            parser.error("--results and --out are required unless --check-attestations")
        unreachable = _labels(args.unreachable)
        hosts_info = summary.get("hosts", [])
        every_host_unreachable = bool(hosts_info) and all(
            h["name"] in unreachable for h in hosts_info
        )
        if every_host_unreachable and not Path(args.results).exists():
            results: Dict[str, Any] = {"results": []}
        else:
            results = _load_json(args.results, "test results")
            if not results.get("results"):
                raise InputError(f"{args.results}: no checklist test results: the suite did not run")
        labels = {h["testinfra"].split("://", 1)[1].split("?", 1)[0]: h["name"] for h in hosts_info}
        labels.update(_labels(args.host_label))
        hosts = [h["name"] for h in hosts_info]
        name = args.name or Path(args.out).name
        report = build(items, results, attestations, hosts, name, labels, args.junit, unreachable)
    except InputError as exc:
        print(f"compliance report: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    Path(f"{out}.md").write_text(markdown(report), encoding="utf-8")
    print(totals_line(report))
    not_run = []
    for entry in report["items"]:
        if entry["status"] != FAIL:
            continue
        if all(not h["tests"] for h in entry["hosts"].values()):
            not_run.append(entry["id"])
        else:
            print(f"  FAIL {entry['id']} {entry['item']}: {_cell(_evidence(entry), 400)}")
    if not_run and set(report["unreachable"]) == set(report["hosts"]):
        print(f"  FAIL, not verified ({len(not_run)} items): unreachable: "
              + ", ".join(report["unreachable"]))
    elif not_run:
        print(f"  FAIL, no test ran ({len(not_run)}): {', '.join(not_run)}")
    if report["totals"]["not_attested"]:
        ids = [e["id"] for e in report["items"] if e["manual"] and not e["attested"]]
        print(f"  MANUAL, not attested ({len(ids)}): {', '.join(ids)}")
    print(f"report: {out}.md, {out}.json" + (f", {args.junit}" if args.junit else ""))
    return 1 if report["result"] == FAIL else 0


if __name__ == "__main__":
    sys.exit(main())
