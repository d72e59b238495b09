"""Build the hub app's wheelhouse for one target Python version and architecture (controller side).

The target installs with `pip install --no-index --find-links`, so it never needs PyPI.
The result is cached in DEST: the app wheel and every pinned dependency as binary wheels for the
target's CPython and manylinux platform, plus a stamp keyed by a checksum of the app sources,
constraints.txt, the target tag and this script. With an unchanged key nothing is rebuilt and the
script reports {"changed": false}; that keeps re-runs fast and idempotent.

Prints exactly one JSON line: {"changed", "dest", "tar", "app_name", "app_version", "app_wheel",
"app_sha256", "files", "key"}; DEST.tar holds the same files for the transfer.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, List

# Directories that never end up in the wheel: caches, build output, the app's own tests.
SKIP_DIRS = {"__pycache__", "build", "dist", "tests", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".venv"}
# A fixed timestamp makes the wheel byte-for-byte reproducible, so a rebuild of the same sources
# (e.g. on a fresh controller checkout) does not look like a new file on the target.
SOURCE_DATE_EPOCH = "315532800"
# Every glibc the supported targets ship (Debian 11: 2.31, RHEL 9: 2.34) satisfies these.
MANYLINUX = ("manylinux_2_28", "manylinux_2_17", "manylinux2014", "manylinux_2_12", "manylinux2010",
             "manylinux_2_5", "manylinux1")
SCRIPT_VERSION = "4"


def source_files(source: Path) -> List[Path]:
    files = []
    for root, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")
                         and not d.endswith(".egg-info"))
        for name in sorted(names):
            if name.endswith((".pyc", ".pyo")):
                continue
            files.append(Path(root) / name)
    return files


def cache_key(source: Path, constraints: Path, tag: str) -> str:
    digest = hashlib.sha256(f"v{SCRIPT_VERSION} {tag}\n".encode())
    for path in source_files(source) + [constraints]:
        rel = path.relative_to(source) if path.is_relative_to(source) else Path("@constraints")
        digest.update(f"{rel}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def run(cmd: List[str], env: Dict[str, str]) -> None:
    # check=False: a failure is reported below with the command's output, then exits 1.
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n")
        sys.exit(1)


def build(args: argparse.Namespace, key: str, dest: Path) -> Dict[str, str]:
    env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH, PIP_DISABLE_PIP_VERSION_CHECK="1")
    pip = [sys.executable, "-m", "pip"]
    work = Path(tempfile.mkdtemp(prefix=".wheelhouse-", dir=dest.parent))
    try:
        # Build from a clean copy: an in-tree build would leave build/ and *.egg-info in app/,
        # and a stale build/lib could put deleted modules into the wheel.
        src = work / "src"
        shutil.copytree(args.source, src, ignore=lambda _d, names: [
            n for n in names if n in SKIP_DIRS or n.startswith(".") or n.endswith((".egg-info", ".pyc"))])
        wheels = work / "wheels"
        run(pip + ["wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(src)], env)
        built = sorted(wheels.glob("*.whl"))
        if len(built) != 1:
            sys.stderr.write(f"expected one app wheel, got {[w.name for w in built]}\n")
            sys.exit(1)
        app_wheel = built[0]
        match = re.match(r"^(?P<name>[^-]+)-(?P<version>[^-]+)-", app_wheel.name)
        if not match:
            sys.stderr.write(f"cannot parse the wheel name {app_wheel.name}\n")
            sys.exit(1)
        platforms: List[str] = []
        for plat in MANYLINUX:
            platforms += ["--platform", f"{plat}_{args.arch}"]
        # -r as well as -c: pip evaluates markers (python_version < '3.11') against the
        # controller's interpreter, so the pins are requested explicitly for the target.
        run(pip + ["download", "--quiet", "--only-binary=:all:", "--implementation", "cp",
                   "--python-version", args.python_version, *platforms,
                   "-c", str(args.constraints), "-r", str(args.constraints),
                   "--dest", str(wheels), str(app_wheel)], env)
        shutil.copy2(args.constraints, wheels / "constraints.txt")
        manifest = {
            "key": key,
            "app_name": match.group("name").replace("_", "-"),
            "app_version": match.group("version"),
            "app_wheel": app_wheel.name,
            "app_sha256": hashlib.sha256(app_wheel.read_bytes()).hexdigest(),
            "files": sorted(w.name for w in wheels.glob("*.whl")),
        }
        (wheels / ".stamp.json").write_text(json.dumps(manifest, sort_keys=True) + "\n")
        # An empty marker named by the key: the target tells with one stat which build it has.
        (wheels / f".build-{key}").touch()
        # The target receives one tar (one checksum to compare on a re-run, not one per wheel).
        # Fixed order, owner and times: the same wheels always make the same bytes.
        tar_tmp = work / "wheelhouse.tar"
        with tarfile.open(tar_tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(wheels.iterdir()):
                info = tar.gettarinfo(str(path), arcname=path.name)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mode = 0o644
                info.mtime = int(SOURCE_DATE_EPOCH)
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
        os.replace(tar_tmp, dest.parent / f"{dest.name}.tar")
        if dest.exists():
            dest.rename(work / "old")  # removed with the work directory below
        wheels.rename(dest)
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="the app's source tree (pyproject.toml)")
    parser.add_argument("--constraints", type=Path, required=True, help="exact pins of every dependency")
    parser.add_argument("--cache-dir", type=Path, required=True, help="parent of the per-target wheelhouses")
    parser.add_argument("--python-version", required=True, help="the target's CPython, e.g. 3.11")
    parser.add_argument("--arch", required=True, choices=["x86_64", "aarch64"])
    args = parser.parse_args()
    if not re.fullmatch(r"3\.\d+", args.python_version):
        parser.error(f"--python-version must look like 3.11, got {args.python_version!r}")
    args.source = args.source.resolve()
    args.constraints = args.constraints.resolve()
    if not (args.source / "pyproject.toml").is_file():
        parser.error(f"{args.source} has no pyproject.toml")

    tag = f"py{args.python_version}-{args.arch}"
    dest = args.cache_dir.resolve() / tag
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Two playbook runs on one controller must not build into the same directory at once.
    with open(dest.parent / f".{tag}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        key = cache_key(args.source, args.constraints, tag)
        stamp = dest / ".stamp.json"
        changed = True
        if stamp.is_file():
            manifest = json.loads(stamp.read_text())
            if (manifest.get("key") == key and (dest / manifest.get("app_wheel", "-")).is_file()
                    and (dest.parent / f"{dest.name}.tar").is_file()):
                changed = False
        if changed:
            manifest = build(args, key, dest)
    print(json.dumps(dict(manifest, changed=changed, dest=str(dest), tar=f"{dest}.tar")))


if __name__ == "__main__":
    main()
