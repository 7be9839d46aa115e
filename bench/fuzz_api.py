"""The API fuzz of the test suite, longer: every operation × every role, N generated cases per operation.

    .venv/bin/python -m bench.fuzz_api [--examples 500] [-k "children"] [--out bench/results/fuzz-api.md]

Runs ``tests/test_api_fuzz.py`` (the CI slice runs 36 cases per operation) with ``--examples`` cases per
operation, on the embedded PostgreSQL of the test harness, each operation against its own database with the
test world and one object of every id kind. Every case is checked by schemathesis: no 5xx, a documented
status code, a body matching the documented schema. Prints (and with ``--out`` writes) the numbers and every
distinct broken promise with one request that shows it. Derandomized: the same code draws the same cases.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=500, help="generated cases per operation")
    parser.add_argument("-k", dest="keyword", default=None, help="only operations matching (pytest -k)")
    parser.add_argument("--out", type=Path, default=None, help="also write the summary as Markdown here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="liushou-fuzz-") as tmp:
        report = Path(tmp) / "fuzz.jsonl"
        env = {**os.environ, "LIUSHOU_FUZZ_EXAMPLES": str(args.examples), "LIUSHOU_FUZZ_REPORT": str(report)}
        command = [sys.executable, "-m", "pytest", "tests/test_api_fuzz.py", "-q", "-p", "no:cacheprovider"]
        if args.keyword:
            command += ["-k", args.keyword]
        started = time.monotonic()
        subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, check=False)
        elapsed = time.monotonic() - started
        rows = [json.loads(line) for line in report.read_text(encoding="utf-8").splitlines()] if report.exists() else []

    summary = summarise(rows, elapsed, args.examples)
    print(summary)
    if args.out:
        args.out.write_text(summary + "\n", encoding="utf-8")
    return 1 if any(row["findings"] for row in rows) or not rows else 0


def summarise(rows: list[dict], elapsed: float, examples: int) -> str:
    cases = sum(row["cases"] for row in rows)
    statuses: Counter[str] = Counter()
    for row in rows:
        statuses.update(row["statuses"])
    findings = [f for row in rows for f in row["findings"]]
    kinds = Counter((f["check"], f["status"]) for f in findings)
    by_kind = ", ".join(f"{check} {status} × {n}" for (check, status), n in sorted(kinds.items()))
    lines = [
        f"# API fuzz: {len(rows)} operations, {cases} cases ({examples} per operation at most), {elapsed:.0f} s",
        "",
        "status codes answered: " + ", ".join(f"{code} × {n}" for code, n in sorted(statuses.items())),
        "",
        f"distinct broken promises: {len(findings)}" + (f" — {by_kind}" if by_kind else ""),
    ]
    for f in sorted(findings, key=lambda f: (f["status"], f["check"], f["operation"])):
        lines += [
            "",
            f"- **{f['operation']}** as {f['who']}: {f['title']} ({f['check']}, {f['status']})",
            f"  - sent: `{printable(f['request'][:200])}`",
            f"  - got: `{printable(f['response'][:200])}`",
        ]
    return "\n".join(lines)


def printable(text: str) -> str:
    """Generated input is full of control characters and stray bytes: show them escaped, not raw."""
    return "".join(
        "\\x60" if c == "`" else c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


if __name__ == "__main__":
    sys.exit(main())
