"""A real PostgreSQL for the tests: Debian's `postgresql` binaries, `initdb` in a temporary folder
and `postgres` on a free loopback port, as the `postgres` user when the tests run as root
(PostgreSQL refuses to run as root). Password authentication (scram-sha-256) is on, so a wrong
password is refused as on a real site."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from conftest import free_port, listening, wait_for

USER = "maskwatch"
PASSWORD = "s3cret-Pa55w0rd"


def binaries() -> Path | None:
    """The folder of the newest installed PostgreSQL's initdb and postgres, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: p.split("/")[4])
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """One cluster; `stop()` shuts it down (fast: clients are cut off) and `start()` brings it
    back on the same port with its data."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="maskwatch-pg-"))
        self.data = self.root / "data"
        self.process: subprocess.Popen[bytes] | None = None
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self._as_user = ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups"]
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as_user:
            shutil.chown(pwfile, "postgres", "postgres")
        subprocess.run(
            [*self._as_user, str(self.bin / "initdb"), "-D", str(self.data), "-U", USER,
             f"--pwfile={pwfile}", "-A", "scram-sha-256", "-E", "UTF8", "--locale=C",
             "--no-sync", "--no-instructions"],
            check=True, capture_output=True, cwd=self.root,
        )  # fmt: skip

    def url(self, database: str = "postgres", password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        with open(self.root / "server.log", "ab") as out:
            self.process = subprocess.Popen(
                [*self._as_user, str(self.bin / "postgres"), "-D", str(self.data),
                 "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
                 "-c", f"unix_socket_directories={self.root}", "-c", "fsync=off",
                 "-c", "full_page_writes=off", "-c", "synchronous_commit=off"],
                stdout=out, stderr=out, cwd=self.root,
            )  # fmt: skip
        wait_for(self.ready, what="postgres")

    def ready(self) -> bool:
        """Whether it accepts connections (not only listens: it may still be starting up)."""
        if not listening(self.port):
            return False
        check = [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        return subprocess.run(check, check=False).returncode == 0

    def stop(self, how: signal.Signals = signal.SIGINT) -> None:
        """Shut down: fast (SIGINT) by default, immediate with SIGQUIT."""
        if self.process is not None:
            self.process.send_signal(how)
            self.process.wait(timeout=30)
            self.process = None

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self) -> None:
        self.stop(signal.SIGQUIT)
        shutil.rmtree(self.root, ignore_errors=True)
