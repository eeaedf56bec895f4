"""The built wheel carries what offload loads at run time (the SQLite and PostgreSQL
migrations and queries, the Redis Lua scripts): installed alone in a fresh virtualenv, it
runs a job on each store.

Nothing else checks this: the rest of the suite imports offload from the source tree, where
every file is present whether or not the build includes it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.stores.conftest import (
    POSTGRES_URL,
    REDIS_URL,
    drop_postgres_schema,
    drop_redis_keys,
    unavailable,
)

ROOT = Path(__file__).resolve().parents[2]

# Run by the fresh virtualenv's interpreter, from a folder outside the repository, so that
# only the installed wheel can provide ``offload``.
JOB = """
import asyncio, sys
import offload
from offload import Offload, Worker

jobs = Offload(sys.argv[1], embedded_worker=False)

@jobs.task
async def add(a: int, b: int) -> int:
    return a + b

async def main() -> None:
    async with jobs:
        job = await add.enqueue(2, 3)
        ran = await Worker(jobs, install_signals=False).run_until_idle()
        print(offload.__file__)
        print(ran, await job.result(timeout=10))

asyncio.run(main())
"""


def _uv() -> str:
    found = shutil.which("uv") or shutil.which("uv", path=str(Path.home() / ".local" / "bin"))
    if found is None:
        unavailable("uv is not installed (scripts/install installs it); needed to build the wheel")
    return found


@pytest.fixture(scope="module")
def wheel_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel built from this tree and its Redis extra."""
    uv = _uv()
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(tmp / "dist"), "--quiet"],
        cwd=ROOT, env=env, check=True, timeout=120,
    )  # fmt: skip
    [wheel] = (tmp / "dist").glob("offload-*.whl")
    venv = tmp / "venv"
    subprocess.run(
        [uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
        env=env, check=True, timeout=60,
    )  # fmt: skip
    python = venv / "bin" / "python"
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(python), f"{wheel}[redis,postgres]"],
        env=env, check=True, timeout=300,
    )  # fmt: skip
    return python


def _run_job(python: Path, url: str, where: Path) -> list[str]:
    script = where / "job.py"
    script.write_text(JOB)
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "OFFLOAD_URL"}}
    done = subprocess.run(
        [str(python), str(script), url],
        cwd=where, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_wheel_runs_a_job_on_sqlite(wheel_python: Path, tmp_path: Path) -> None:
    installed, outcome = _run_job(wheel_python, f"sqlite:///{tmp_path / 'jobs.db'}", tmp_path)
    assert "site-packages" in installed
    assert not installed.startswith(str(ROOT / "src"))
    assert outcome == "1 5"


async def test_the_wheel_runs_a_job_on_redis(wheel_python: Path, tmp_path: Path) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        unavailable(f"Redis not reachable at 127.0.0.1:6379: {exc}")
    finally:
        await client.aclose()
    prefix = f"test-wheel-{uuid.uuid4().hex}"
    try:
        installed, outcome = _run_job(wheel_python, f"{REDIS_URL}?prefix={prefix}", tmp_path)
    finally:
        await drop_redis_keys(prefix)
    assert "site-packages" in installed
    assert outcome == "1 5"


async def test_the_wheel_runs_a_job_on_postgresql(wheel_python: Path, tmp_path: Path) -> None:
    """The migrations and queries (.sql files) are in the wheel and load from it."""
    import psycopg

    try:
        conn = await psycopg.AsyncConnection.connect(POSTGRES_URL, connect_timeout=5)
        await conn.close()
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}")
    schema = f"test_wheel_{uuid.uuid4().hex}"
    try:
        installed, outcome = _run_job(wheel_python, f"{POSTGRES_URL}?schema={schema}", tmp_path)
    finally:
        await drop_postgres_schema(schema)
    assert "site-packages" in installed
    assert outcome == "1 5"
