"""Type-checks the README's examples as a user's code: `mypy --strict` and basedpyright (pyright's
checks, from PyPI) over its ```python blocks, laid out as tests/test_readme.py runs them (module
blocks as their modules, the other blocks one after another in one file, skipped ones alone).

    python -m tests.readme_types        (make lint runs it)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from tests.test_readme import README, python_blocks


def lay_out(root: Path) -> list[str]:
    runs = []
    for b in python_blocks(README.read_text(encoding="utf-8")):
        if b.module:
            (root / f"{b.module}.py").write_text(b.code, encoding="utf-8")
        elif b.skip:
            (root / f"readme_skipped_{b.line}.py").write_text(b.code, encoding="utf-8")
        else:
            runs.append(f"# README.md:{b.line}\n{b.code}")
    (root / "readme_run.py").write_text("".join(runs), encoding="utf-8")
    return sorted(p.name for p in root.glob("*.py"))


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="fastjobs-readme-types-") as tmp:
        root = Path(tmp)
        files = lay_out(root)
        (root / "pyrightconfig.json").write_text('{"typeCheckingMode": "standard", "pythonVersion": "3.10"}', encoding="utf-8")
        # Django ships no types (the Django recipe's block): its imports are taken as Any.
        (root / "mypy.ini").write_text("[mypy]\n[mypy-django.*]\nignore_missing_imports = True\n", encoding="utf-8")
        failed = 0
        for cmd in ([sys.executable, "-m", "mypy", "--strict", "--python-version", "3.10", "--no-incremental", "--config-file", "mypy.ini", *files],
                    [sys.executable, "-m", "basedpyright", "--pythonpath", sys.executable, *files]):
            r = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
            print(f"$ {' '.join(Path(cmd[2]).name if i == 2 else c for i, c in enumerate(cmd[:3]))} <the README's examples>")
            print((r.stdout + r.stderr).strip().replace(str(root) + "/", ""))
            failed |= r.returncode != 0
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
