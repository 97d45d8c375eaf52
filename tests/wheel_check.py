"""Installs the built wheel as a user would, and runs the README's quick start against it.

    python tests/wheel_check.py target/wheels        (make wheel-check; CI runs it)

Checks the wheel's tags (abi3, manylinux), then makes a fresh virtualenv with no cargo on its
PATH and no source tree on sys.path, installs the wheel there (pip fetches orjson), starts a
redis-server on a free port, and runs the quick start's `tasks.py` with `fastjobs worker` from
that virtualenv: the dispatch must come back "sent to ada@example.com". The dashboard's static
files must be in the wheel too.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import tempfile
import time
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quick_start() -> str:
    """The README's `tasks.py` block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"```python\n(# tasks\.py\n.*?)```", text, re.S)
    assert m, "README.md has no tasks.py block"
    return m.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(folder: str) -> int:
    wheels = sorted(Path(folder).glob("fastjobs-*.whl"))
    assert wheels, f"no fastjobs wheel in {folder}"
    wheel = wheels[-1]
    tags = wheel.name.removesuffix(".whl").split("-")[-3:]
    assert tags[1] == "abi3" and tags[2].startswith("manylinux_"), f"{wheel.name}: expected an abi3 manylinux wheel"
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("fastjobs/_core.abi3.so", "fastjobs/py.typed", "fastjobs/dashboard/static/index.html"):
        assert needed in names, f"{wheel.name} lacks {needed}"
    with tempfile.TemporaryDirectory(prefix="fastjobs-wheel-") as tmp:
        home = Path(tmp)
        venv.create(home / "venv", with_pip=True)
        py = str(home / "venv" / "bin" / "python")
        env = {"PATH": f"{home / 'venv' / 'bin'}:/usr/bin:/bin", "HOME": tmp, "LANG": "C.UTF-8"}
        subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)], env=env, check=True)
        (home / "tasks.py").write_text(quick_start(), encoding="utf-8")
        port = free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", tmp],
                                 stdout=subprocess.DEVNULL)
        env.update(FASTJOBS_URL=f"redis://127.0.0.1:{port}/0", PYTHONPATH=str(home))
        try:
            deadline = time.monotonic() + 10
            while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
            worker = subprocess.Popen([str(home / "venv" / "bin" / "fastjobs"), "worker", "tasks", "--queue", "emails"], cwd=tmp, env=env)
            try:
                code = ("from tasks import SendEmail\n"
                        "print(SendEmail.dispatch({'to': 'ada@example.com'}).send().wait_result(timeout=30))\n")
                out = subprocess.run([py, "-c", code], cwd=tmp, env=env, capture_output=True, text=True, timeout=60)
                assert out.stdout.strip() == "sent to ada@example.com", out.stdout + out.stderr
                where = subprocess.run([py, "-c", "import fastjobs; print(fastjobs.__file__)"], cwd=tmp, env=env,
                                       capture_output=True, text=True, check=True).stdout
                assert str(home / "venv") in where, f"fastjobs was imported from {where}, not from the wheel"
            finally:
                worker.terminate()
                worker.wait(30)
        finally:
            redis.terminate()
            redis.wait(10)
    print(f"{wheel.name}: installed in a fresh virtualenv without cargo; the quick start ran against it")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target" / "wheels")))
