"""OpenSCAP scans of the hub hosts: the content on the controller, and the report of the results.

    python3 -m checklist.scap content --platform Debian-12 [--cache .cache/scap]
        prints the path of the platform's datastream, fetched once and checked (scap/content.yml)
    python3 -m checklist.scap report --results DIR --out reports/compliance-NAME-scap [--name NAME]
        reads DIR/HOST/PROFILE.xml (XCCDF results), writes OUT.md, OUT.json and OUT.xml (JUnit)

Each rule that fails is a FAIL unless scap/deviations.yml lists it for that profile with its
reason and switch (then DEVIATION). Rules map to checklist IDs through scap/deviations.yml's
``checklist`` prefixes (longest prefix wins). Exit status of ``report``: 0 no FAIL in a gating
profile (scap/content.yml), 1 a FAIL, 2 unusable input (no results, unreadable XML).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from xml.sax.saxutils import quoteattr

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONTENT = ROOT / "scap" / "content.yml"
DEVIATIONS = ROOT / "scap" / "deviations.yml"
RULE_PREFIX = "xccdf_org.ssgproject.content_rule_"
PROFILE_PREFIX = "xccdf_org.ssgproject.content_profile_"
XCCDF_NS = "http://checklists.nist.gov/xccdf/1.2"
PASS, FAIL, DEVIATION = "pass", "fail", "deviation"


class InputError(Exception):
    """Inputs that cannot make a report or content (exit 2)."""


def load_yaml(path: Path) -> Dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a mapping")
    return data


# --- content --------------------------------------------------------------------------------


def deb_members(data: bytes) -> Dict[str, bytes]:
    """The members of a .deb (an ar archive): name -> bytes."""
    if not data.startswith(b"!<arch>\n"):
        raise InputError("not a Debian package (no ar header)")
    members: Dict[str, bytes] = {}
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        members[name] = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size % 2)
    return members


def extract_file(deb: bytes, filename: str) -> bytes:
    """The file named ``filename`` (basename) from the package's data archive."""
    members = deb_members(deb)
    data_name = next((n for n in members if n.startswith("data.tar")), None)
    if data_name is None:
        raise InputError("the package has no data archive")
    with tarfile.open(fileobj=io.BytesIO(members[data_name])) as tar:
        for info in tar.getmembers():
            if info.isfile() and Path(info.name).name == filename:
                extracted = tar.extractfile(info)
                assert extracted is not None
                return extracted.read()
    raise InputError(f"the package has no {filename}")


def fetch_package(name: str, content: Dict[str, Any], cache: Path) -> bytes:
    """The package's bytes, from the cache or the archive; its SHA-256 must match."""
    spec = content["packages"].get(name)
    if spec is None:
        raise InputError(f"scap/content.yml: no package {name}")
    path = cache / Path(spec["path"]).name
    if path.exists():
        data = path.read_bytes()
    else:
        url = f"{content['archive'].rstrip('/')}/{spec['path']}"
        with urllib.request.urlopen(url, timeout=120) as response:
            data = response.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec["sha256"]:
        path.unlink(missing_ok=True)
        raise InputError(f"{name}: SHA-256 {digest}, scap/content.yml expects {spec['sha256']}")
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)
    return data


def datastream(platform: str, content: Dict[str, Any], cache: Path) -> Path:
    """The platform's datastream in the cache (made once from its checked package)."""
    spec = content["platforms"].get(platform)
    if spec is None:
        known = ", ".join(sorted(content["platforms"]))
        raise InputError(f"no SCAP content for {platform} (scap/content.yml knows {known})")
    out = cache / f"{platform}-{spec['datastream']}"
    if out.exists():
        return out
    deb = fetch_package(spec["package"], content, cache)
    xml = extract_file(deb, spec["datastream"])
    widen = spec.get("platform_from")
    if widen:
        old, new = widen["pattern"].encode(), widen["replace"].encode()
        if xml.count(old) != 1:
            raise InputError(f"{platform}: the platform check {widen['pattern']} is not in "
                             f"{spec['datastream']} exactly once")
        xml = xml.replace(old, new)
    tmp = Path(f"{out}.part")
    tmp.write_bytes(xml)
    tmp.replace(out)
    return out


# --- results ----------------------------------------------------------------------------------


def parse_results(xml: bytes) -> Tuple[str, Dict[str, str]]:
    """(profile, {rule: result}) of one XCCDF results file; results are pass, fail, notapplicable..."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise InputError(f"unreadable XCCDF results: {exc}") from exc
    results = [e for e in root.iter(f"{{{XCCDF_NS}}}TestResult")]
    if not results:
        raise InputError("no TestResult in the XCCDF results")
    test = results[-1]
    profile_el = test.find(f"{{{XCCDF_NS}}}profile")
    profile = (profile_el.get("idref", "") if profile_el is not None else "").replace(PROFILE_PREFIX, "")
    rules: Dict[str, str] = {}
    for rr in test.iter(f"{{{XCCDF_NS}}}rule-result"):
        result = rr.find(f"{{{XCCDF_NS}}}result")
        rules[rr.get("idref", "").replace(RULE_PREFIX, "")] = (result.text or "").strip() if result is not None else ""
    return profile, rules


def checklist_id(rule: str, mapping: Dict[str, str]) -> Optional[str]:
    """The checklist ID of the longest matching rule prefix, if any."""
    best = max((p for p in mapping if rule.startswith(p)), key=len, default=None)
    return mapping[best] if best is not None else None


def build(results: Dict[str, Dict[str, Dict[str, str]]], deviations: Dict[str, Any],
          gating: Dict[str, List[str]]) -> Dict[str, Any]:
    """The report: per host and profile, counts and the rules that failed (FAIL or DEVIATION)."""
    allowed: Dict[str, Dict[str, Any]] = deviations.get("deviations") or {}
    mapping: Dict[str, str] = deviations.get("checklist") or {}
    hosts: List[Dict[str, Any]] = []
    failed = 0
    for host in sorted(results):
        for profile in sorted(results[host]):
            rules = results[host][profile]
            counts: Dict[str, int] = {}
            for value in rules.values():
                counts[value] = counts.get(value, 0) + 1
            findings = []
            for rule in sorted(r for r, v in rules.items() if v in ("fail", "error")):
                dev = allowed.get(rule)
                status = DEVIATION if dev and profile in dev.get("profiles", []) else FAIL
                gate = profile in gating.get(host, [])
                if status == FAIL and gate:
                    failed += 1
                findings.append({
                    "rule": rule, "status": status, "gating": gate,
                    "checklist": checklist_id(rule, mapping),
                    "reason": (dev or {}).get("reason", "") if status == DEVIATION else "",
                    "switch": (dev or {}).get("switch", "") if status == DEVIATION else "",
                })
            hosts.append({"host": host, "profile": profile, "counts": counts, "findings": findings})
    return {"hosts": hosts, "failed": failed}


def markdown(report: Dict[str, Any], name: str) -> str:
    lines = [f"# OpenSCAP scan: {name}", "",
             "Failed rules that are not a documented deviation (docs/deviations.md, "
             f"scap/deviations.yml) in a gating profile: **{report['failed']}**.", "",
             "| host | profile | pass | fail | deviation | notapplicable |", "|---|---|---|---|---|---|"]
    for h in report["hosts"]:
        devs = sum(1 for f in h["findings"] if f["status"] == DEVIATION)
        fails = sum(1 for f in h["findings"] if f["status"] == FAIL)
        c = h["counts"]
        lines.append(f"| {h['host']} | {h['profile']} | {c.get('pass', 0)} | {fails} | {devs} | "
                     f"{c.get('notapplicable', 0)} |")
    for h in report["hosts"]:
        if not h["findings"]:
            continue
        lines += ["", f"## {h['host']}: {h['profile']}", "",
                  "| rule | status | checklist | reason | switch |", "|---|---|---|---|---|"]
        for f in h["findings"]:
            status = f["status"].upper() + ("" if f["gating"] else " (not gating)")
            lines.append(f"| `{f['rule']}` | {status} | {f['checklist'] or ''} | "
                         f"{f['reason'].replace('|', '/')} | {f['switch']} |")
    return "\n".join(lines) + "\n"


def junit(report: Dict[str, Any]) -> str:
    """One testsuite per host and profile; a testcase per failed rule (failure or skipped)."""
    out = ['<?xml version="1.0" encoding="utf-8"?>', "<testsuites>"]
    for h in report["hosts"]:
        cases = h["findings"]
        fails = sum(1 for f in cases if f["status"] == FAIL and f["gating"])
        suite = quoteattr(f"scap.{h['host']}.{h['profile']}")
        out.append(f'  <testsuite name={suite} tests="{h["counts"].get("pass", 0) + len(cases)}" '
                   f'failures="{fails}" skipped="{len(cases) - fails}">')
        out.append(f'    <testcase classname={suite} name="passed rules: {h["counts"].get("pass", 0)}"/>')
        for f in cases:
            out.append(f'    <testcase classname={suite} name={quoteattr(f["rule"])}>')
            if f["status"] == FAIL and f["gating"]:
                out.append(f'      <failure message={quoteattr("rule failed, not a listed deviation")}/>')
            else:
                why = f"deviation: {f['reason']}" if f["status"] == DEVIATION else "not a gating profile"
                out.append(f"      <skipped message={quoteattr(why)}/>")
            out.append("    </testcase>")
        out.append("  </testsuite>")
    out.append("</testsuites>")
    return "\n".join(out) + "\n"


def read_results(directory: Path) -> Dict[str, Dict[str, Dict[str, str]]]:
    results: Dict[str, Dict[str, Dict[str, str]]] = {}
    for path in sorted(directory.glob("*/*.xml")):
        profile, rules = parse_results(path.read_bytes())
        results.setdefault(path.parent.name, {})[profile or path.stem] = rules
    if not results:
        raise InputError(f"no results in {directory} (HOST/PROFILE.xml)")
    return results


def read_gating(directory: Path) -> Dict[str, List[str]]:
    """Per host, the gating profiles its scan recorded (DIR/HOST/gating.json)."""
    gating: Dict[str, List[str]] = {}
    for path in directory.glob("*/gating.json"):
        gating[path.parent.name] = list(json.loads(path.read_text(encoding="utf-8")))
    return gating


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("content")
    c.add_argument("--platform", required=True, help="e.g. Debian-12 (distribution-major version)")
    c.add_argument("--cache", default=str(ROOT / ".cache" / "scap"))
    r = sub.add_parser("report")
    r.add_argument("--results", required=True, help="directory of HOST/PROFILE.xml")
    r.add_argument("--out", required=True, help="output path without extension")
    r.add_argument("--name", default="")
    r.add_argument("--deviations", default=str(DEVIATIONS))
    args = parser.parse_args(argv)
    try:
        if args.command == "content":
            print(datastream(args.platform, load_yaml(CONTENT), Path(args.cache)))
            return 0
        results_dir = Path(args.results)
        report = build(read_results(results_dir), load_yaml(Path(args.deviations)),
                       read_gating(results_dir))
    except (InputError, OSError) as exc:
        print(f"scap: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    name = args.name or out.name
    Path(f"{out}.md").write_text(markdown(report, name), encoding="utf-8")
    Path(f"{out}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    Path(f"{out}.xml").write_text(junit(report), encoding="utf-8")
    for h in report["hosts"]:
        fails = [f["rule"] for f in h["findings"] if f["status"] == FAIL]
        print(f"scap: {h['host']} {h['profile']}: {h['counts'].get('pass', 0)} pass, "
              f"{len(fails)} fail, {len(h['findings']) - len(fails)} deviation(s)"
              + (f": {' '.join(fails)}" if fails else ""))
    print(f"scap: report {out}.md")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
