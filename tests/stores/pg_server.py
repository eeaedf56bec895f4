"""A PostgreSQL server of a test's own (initdb into a temporary folder, started with pg_ctl),
for tests that crash the server, which the shared one must never be.

Running as root, the server binaries run as the ``postgres`` system user (``initdb`` and
``postgres`` refuse root), in a folder of its own outside pytest's temporary folders, which
are open to root alone.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import psycopg.sql
import pytest

from tests.stores.conftest import _free_port, unavailable

SERVER_USER = "postgres"
# Seconds pg_ctl waits for a start (crash recovery included) or a stop before giving up.
PG_CTL_WAIT = 60


def find_bindir() -> Path | None:
    """Where initdb and pg_ctl are: pg_config's answer, else the newest Debian install."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))
    # Debian puts the server's binaries beside its version, off PATH.
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    candidates += [Path(p) for p in debian]
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


def _version(bindir: str) -> int:
    name = Path(bindir).parent.name
    return int(name) if name.isdigit() else 0


class OwnPostgres:
    """A throwaway cluster: trust auth for ``postgres``, fsync on, its own unix socket folder
    and log file, on a free loopback port that ``start`` reuses after a ``crash``."""

    def __init__(self, tmp: Path, bindir: Path | None = None) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise FileNotFoundError("initdb and pg_ctl not found (pg_config --bindir)")
        self.bindir = found
        self.as_root = os.geteuid() == 0
        if self.as_root:
            owner = pwd.getpwnam(SERVER_USER)  # KeyError: no such user
            self.dir = Path(tempfile.mkdtemp(prefix="offload-pg-"))
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        else:
            self.dir = tmp / "postgres"
            self.dir.mkdir()
        self.data = self.dir / "data"
        self.sockets = self.dir / "sockets"
        self.log = self.dir / "server.log"
        self.port = _free_port()
        self.running = False
        try:
            self._pg(["initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                      "--encoding=UTF8", "--locale=C", "--no-instructions"])  # fmt: skip
            self._pg(["mkdir", "-p", str(self.sockets)])
        except BaseException:
            self.cleanup()
            raise

    @property
    def conninfo(self) -> str:
        """The URL for psycopg (libpq), without offload's own options."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, schema: str, **options: str) -> str:
        """The URL for offload: the ``postgres`` database, in a schema of the test's own."""
        extra = "".join(f"&{k}={v}" for k, v in options.items())
        return f"{self.conninfo}?schema={schema}{extra}"

    def start(self) -> None:
        """Start (or start again, on the same port and data, recovering after a crash)."""
        settings = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.sockets}",
            # Durable commits, as a production server has them: a crash loses nothing acked.
            "-c fsync=on",
            "-c synchronous_commit=on",
            "-c max_connections=200",
            "-c shared_buffers=32MB",
        ]
        self._pg(["pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w",
                  "-t", str(PG_CTL_WAIT), "-o", " ".join(settings)])  # fmt: skip
        self.running = True

    def crash(self) -> None:
        """Stop at once without a checkpoint (``-m immediate``): the next start recovers from
        the WAL, as after a power cut."""
        self._pg(["pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w"])
        self.running = False

    def stop(self) -> None:
        if self.running:
            self._pg(["pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w",
                      "-t", str(PG_CTL_WAIT)])  # fmt: skip
            self.running = False

    def cleanup(self) -> None:
        """Stop the server and remove a folder made outside pytest's own."""
        try:
            self.stop()
        finally:
            if self.as_root:
                shutil.rmtree(self.dir, ignore_errors=True)

    def require_password(self, password: str) -> None:
        """Give ``postgres`` a password and ask for it on TCP connections (SCRAM), as a
        production server does; the unix socket stays trusted."""
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("ALTER USER postgres PASSWORD {}").format(
                    psycopg.sql.Literal(password)
                )
            )
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )
        self._pg(["pg_ctl", "reload", "-D", str(self.data), "-w"])

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def _pg(self, args: list[str]) -> None:
        program = args[0] if args[0] == "mkdir" else str(self.bindir / args[0])
        command = [program, *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        out = subprocess.run(
            command, capture_output=True, text=True, cwd=self.dir, timeout=PG_CTL_WAIT + 30
        )
        if out.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({out.returncode}): {out.stdout}{out.stderr}\n"
                f"{self.log_tail()}"
            )


def unstarted_postgres(tmp_path: Path) -> OwnPostgres:
    """A cluster of the test's own, made but not started, or a skip (a failure under CI)
    naming what is missing."""
    bindir = find_bindir()
    if bindir is None:
        unavailable(
            "initdb is not installed (pg_config --bindir, /usr/lib/postgresql/*/bin): needed "
            "for a PostgreSQL server of the test's own"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            unavailable(
                f"running as root, and there is no {SERVER_USER!r} user to run initdb as "
                "(initdb refuses root)"
            )
    return OwnPostgres(tmp_path, bindir)


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[OwnPostgres]:
    server = unstarted_postgres(tmp_path)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
