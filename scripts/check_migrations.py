#!/usr/bin/env python3
"""Fails when a migration that is in the history has been edited or removed.

A deployed database holds the checksum of every migration it applied, and sqlx refuses to start
when a file no longer matches (or is gone). So a migration is frozen from the commit that first
added it: every schema change is a new file. This compares each file under migrations/ with the
version of its first commit, and lists migrations that the history added but the tree lacks.

Two migrations were edited before the first release (before any database outside the project
held them); their accepted content is pinned below by SHA-256, so a further edit still fails.
"""

import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = "migrations"

# file -> (sha256 of the accepted content, why it differs from its first commit)
EDITED_BEFORE_RELEASE = {
    "20261122000001_tenants_and_audiences.sql": (
        "4bb087d0330387697cbbe6fda754e700552d799e013cd90894dd18d0f1ec9419",
        "partial GIN index on dependencies (83e685d), before the first landing",
    ),
    "20261122000002_audience_ingestion.sql": (
        "c54cc6e7aaa98748eec844d75ae18a6304dbdc76cdec1a63ad20108908f511f2",
        "foreign keys dropped from the bulk tables (7ce4a43), before the first landing",
    ),
}


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True
    ).stdout


def git_bytes(*args: str) -> bytes:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], check=True, capture_output=True
    ).stdout


def main() -> int:
    if git("rev-parse", "--is-shallow-repository").strip() == "true":
        subprocess.run(["git", "-C", str(ROOT), "fetch", "-q", "--unshallow"], check=False)
    if git("rev-parse", "--is-shallow-repository").strip() == "true":
        print(
            "check_migrations: this clone is shallow, so the first version of each migration "
            "is unknown; run `git fetch --unshallow` first",
            file=sys.stderr,
        )
        return 1
    problems = []
    current = sorted(p.name for p in (ROOT / MIGRATIONS).glob("*.sql"))
    ever_added = set(
        Path(line).name
        for line in git(
            "log", "--diff-filter=A", "--name-only", "--format=", "--", MIGRATIONS
        ).split()
        if line.endswith(".sql")
    )
    for name in sorted(ever_added - set(current)):
        problems.append(f"{name}: removed, but databases that applied it still list it")
    for name in current:
        path = f"{MIGRATIONS}/{name}"
        content = (ROOT / path).read_bytes()
        digest = hashlib.sha256(content).hexdigest()
        first = git("log", "--diff-filter=A", "--format=%H", "--", path).split()
        if not first:
            print(f"  new      {name} (not committed yet)")
            continue
        original = git_bytes("show", f"{first[-1]}:{path}")
        if original == content:
            print(f"  frozen   {name} (as first committed in {first[-1][:9]})")
            continue
        accepted = EDITED_BEFORE_RELEASE.get(name)
        if accepted and accepted[0] == digest:
            print(f"  accepted {name}: {accepted[1]}")
            continue
        problems.append(
            f"{name}: differs from its first commit {first[-1][:9]} (sha256 now {digest}); "
            "put the change in a new migration instead"
        )
    for p in problems:
        print(f"check_migrations: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
