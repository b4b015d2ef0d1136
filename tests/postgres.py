"""A real PostgreSQL server for the tests: Debian's server binaries (make test installs them when they
are missing), a cluster in a temp folder, listening on a free loopback port, stopped at the end.

PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` user the Debian
package creates, and the server runs as that user."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def server_binaries() -> Path | None:
    """The folder holding initdb and pg_ctl: the newest Debian cluster version, else the PATH."""
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(Path(path).parts[-3]))
    if versions:
        return Path(versions[-1]).parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Starts a server; yields its base URL, `postgresql+psycopg://postgres@127.0.0.1:<port>`."""
    binaries = server_binaries()
    if binaries is None:
        raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl): `make test` installs Debian's postgresql")
    folder = Path(tempfile.mkdtemp(prefix="har-postgres-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", free_port()
    pg_ctl = [*as_owner, str(binaries / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run(
            [*as_owner, str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync"],
            check=True,
            capture_output=True,
        )
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
        subprocess.run(
            [*pg_ctl, "-l", str(folder / "server.log"), "-w", "-o", options, "start"], check=True, capture_output=True
        )
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def create_database(base_url: str, name: str) -> str:
    """A new, empty database on the server; returns its SQLAlchemy URL."""
    import psycopg

    with psycopg.connect(base_url.replace("+psycopg", "") + "/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return f"{base_url}/{name}"
