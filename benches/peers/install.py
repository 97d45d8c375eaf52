"""Installs the peer queues for `make bench-peers`: the shared .venv-peers from
requirements.txt, and one .venv-peers-<system> per line of venvs.txt (`--only a,b`: those
lines alone, for `make bench-peers-pg`):

    <system> [python=3.12] <pip requirement> ...

`python=X.Y` names the interpreter a peer needs (found as pythonX.Y on PATH or under
~/.pyenv/versions); a peer whose interpreter or packages cannot be had is reported and
skipped, so the comparison runs with the others.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def interpreter(version: str | None) -> str | None:
    if version is None:
        return sys.executable if sys.version_info >= (3, 9) else shutil.which("python3")
    # A pyenv shim on PATH may name a version that is installed but not selected, and then
    # fails when run: every candidate is tried before it is chosen.
    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}*/bin/python3")), reverse=True)
    for exe in candidates:
        if exe and subprocess.run([exe, "-c", "pass"], capture_output=True).returncode == 0:
            return exe
    return None


def venv(path: Path, python: str, requirements: list[str]) -> bool:
    if not (path / "bin" / "python").exists():
        subprocess.run([python, "-m", "venv", str(path)], check=True)
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    return subprocess.run(pip + requirements).returncode == 0


def main() -> int:
    # --only pgqueuer,procrastinate: those lines of venvs.txt alone (make bench-peers-pg).
    only = set(sys.argv[sys.argv.index("--only") + 1].split(",")) if "--only" in sys.argv else None
    if only is None:
        ok = venv(ROOT / ".venv-peers", interpreter(None) or "python3", ["-r", str(HERE / "requirements.txt")])
        print(f"{'installed' if ok else 'FAILED'}: .venv-peers ({(HERE / 'requirements.txt').read_text().split()})")
    for line in (HERE / "venvs.txt").read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        system, rest = words[0], words[1:]
        if only is not None and system not in only:
            continue
        version = None
        if rest and rest[0].startswith("python="):
            version, rest = rest[0].split("=", 1)[1], rest[1:]
        python = interpreter(version)
        if python is None:
            print(f"skipped: {system} needs Python {version}, which this machine does not have")
            continue
        ok = venv(ROOT / f".venv-peers-{system}", python, rest)
        print(f"{'installed' if ok else 'FAILED'}: {system} ({' '.join(rest)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
