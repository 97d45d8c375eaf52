"""Runs the examples of README.md against the test Redis, with a worker in a thread.

How the README's ```python blocks are used:

- a block whose first line is ``# NAME.py`` is a module: it is written to ``NAME.py`` in a
  temporary directory on ``sys.path`` and imported before the worker starts, so the worker
  runs its jobs, as ``fastjobs worker NAME`` would;
- every other block runs, in README order, in one namespace, unless the line before its
  fence is ``<!-- readme-test: skip -->`` (examples that configure another server or block);
- blocks after ``<!-- readme-test: postgres -->`` (modules and runs) are the PostgreSQL
  store's: tests/test_postgres_store.py runs them the same way, against its server;
- a line ``print(...)  # TEXT`` expects ``TEXT`` as a line of that block's output, unless
  TEXT starts with ``e.g.`` or contains ``...``.

The blocks that run must not call ``fastjobs.configure``: the autouse fixture of conftest has
already pointed fastjobs at the test Redis, under a prefix of this test's own.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastjobs

README = Path(__file__).resolve().parent.parent / "README.md"
SKIP = "<!-- readme-test: skip -->"
POSTGRES = "<!-- readme-test: postgres -->"
MODULE = re.compile(r"^#\s*([A-Za-z_]\w*)\.py\s*$")


@dataclass
class Block:
    line: int  # line number of the first code line in README.md
    code: str
    skip: bool
    #: A PostgreSQL example: skipped here, run by tests/test_postgres_store.py.
    postgres: bool = False

    @property
    def module(self) -> str | None:
        m = MODULE.match(self.code.split("\n", 1)[0])
        return m.group(1) if m else None


def python_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        fence = lines[i].strip()
        if fence.startswith("```"):
            start = i + 1
            j = start
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            if fence in ("```python", "```py"):
                before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
                blocks.append(Block(start + 1, "\n".join(lines[start:j]) + "\n", before in (SKIP, POSTGRES), before == POSTGRES))
            i = j + 1
        else:
            i += 1
    return blocks


def expectations(block: Block) -> list[tuple[int, str]]:
    out = []
    for n, line in enumerate(block.code.split("\n")):
        code, sep, comment = line.strip().partition("  # ")
        comment = comment.strip()
        if sep and code.startswith("print(") and comment and not comment.startswith("e.g.") and "..." not in comment:
            out.append((block.line + n, comment))
    return out


def run_block(block: Block, namespace: dict[str, Any]) -> list[str]:
    # Leading newlines keep the line numbers of tracebacks equal to README.md's.
    code = compile("\n" * (block.line - 1) + block.code, str(README), "exec")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(code, namespace)
    sys.stdout.write(buf.getvalue())  # shown by pytest when the test fails
    return buf.getvalue().splitlines()


def test_readme_examples(tmp_path: Path, monkeypatch: Any, start_worker: Any) -> None:
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    modules = [b for b in blocks if b.module and not b.skip]
    runs = [b for b in blocks if not b.module and not b.skip]
    assert modules, "README.md has no module block (a ```python block starting with `# NAME.py`)"
    assert runs, "README.md has no runnable ```python block"
    for b in runs:
        assert "configure(" not in b.code, (
            f"README.md:{b.line}: a block that runs must not call fastjobs.configure "
            f"(mark it with {SKIP} on the line before its fence)"
        )

    # The README's jobs register in a registry of their own, so that names used by other
    # tests cannot clash with them and the worker runs exactly the README's jobs.
    monkeypatch.setattr(importlib.import_module("fastjobs.job"), "_REGISTRY", {})
    # Middleware the README registers wraps the README's worker only, not later tests'.
    monkeypatch.setattr(importlib.import_module("fastjobs.hooks"), "_MIDDLEWARE", [])
    monkeypatch.syspath_prepend(str(tmp_path))
    names = [b.module for b in modules]
    assert len(set(names)) == len(names), f"README.md defines a module twice: {names}"
    for b in modules:
        (tmp_path / f"{b.module}.py").write_text(b.code, encoding="utf-8")
    importlib.invalidate_caches()
    try:
        for name in names:
            assert name not in sys.modules, f"module name {name!r} of README.md is taken in the test process"
            importlib.import_module(name)
        jobs = fastjobs.registry()
        assert jobs, "the README's modules register no job"

        queues = {cls.queue for cls in jobs.values()}
        for b in runs:
            queues.update(re.findall(r"""on_queue\(\s*["']([^"']+)["']""", b.code))
        start_worker(queues=sorted(queues), concurrency=2)

        namespace: dict[str, Any] = {"__name__": "__readme__"}
        checked = []
        for b in runs:
            output = run_block(b, namespace)
            for line, expected in expectations(b):
                assert expected in output, f"README.md:{line}: expected the line {expected!r}, the block printed {output!r}"
                checked.append(expected)
    finally:
        for name in names:
            sys.modules.pop(name, None)

    # The quick start's result must be among what was checked.
    assert "sent to ada@example.com" in checked, f"the quick start's result was not checked; checked: {checked}"
