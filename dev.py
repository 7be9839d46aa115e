#!/usr/bin/env python3
"""One entry point for newcomers and CI; needs only Python 3.11+.

    python3 dev.py serve   # the API on an embedded PostgreSQL with the demo county, docs at /docs
    python3 dev.py test    # lint, type check and the whole test suite (what CI runs)

It creates ``.venv`` from the pinned ``requirements.lock`` on first use (and again whenever the lock changes).
Anything after the command is passed on: ``python3 dev.py test -k escalation``, ``python3 dev.py serve --port 9000``.
"""

import hashlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".liushou-installed"


def _lock_digest() -> str:
    h = hashlib.sha256()
    for name in ("requirements.lock", "pyproject.toml"):
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036  (this script must explain, not crash, on old Pythons)
        sys.exit("liushou needs Python 3.11 or newer")
    digest = _lock_digest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    if not (BIN / "python").exists():
        print("creating .venv …", flush=True)
        venv.create(VENV, with_pip=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    print("installing pinned dependencies from requirements.lock …", flush=True)
    subprocess.run([*pip, "-r", str(ROOT / "requirements.lock")], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)
    STAMP.write_text(digest)


def run(*cmd: str) -> int:
    """Run ``cmd`` and wait for it to end, whatever signal we get (``subprocess.run`` kills its child 0.25 s
    after a Ctrl+C, which left the embedded database running). A Ctrl+C in the terminal reaches the child
    directly (same process group), so we ignore ours; SIGTERM and SIGHUP sent to us are passed on. When both
    of us get one (a closed terminal), the child sees it twice and stops at once — the database too."""
    print("$", " ".join(cmd), flush=True)
    child = subprocess.Popen(cmd, cwd=ROOT)
    forwarded = [sig for sig in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if sig]
    previous = {sig: signal.signal(sig, lambda sig, _frame: child.send_signal(sig)) for sig in forwarded}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("serve", "test"):
        print(__doc__)
        return 2
    command, extra = sys.argv[1], sys.argv[2:]
    ensure_venv()
    if command == "serve":
        return run(str(BIN / "liushou"), "serve", "--demo", *extra)
    for step in (
        (str(BIN / "ruff"), "check", "api", "tests", "alembic", "bench", "dev.py"),
        (str(BIN / "ruff"), "format", "--check", "api", "tests", "alembic", "bench", "dev.py"),
        (str(BIN / "mypy"), "api"),
    ):
        if not extra and run(*step) != 0:
            return 1
    return run(str(BIN / "python"), "-m", "pytest", *(extra or ["-q"]))


if __name__ == "__main__":
    sys.exit(main())
