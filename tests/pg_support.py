"""A throwaway PostgreSQL server for tests and benchmarks: initdb in a temp folder, 127.0.0.1,
a free port, trust auth, stopped and removed afterwards. As root it runs as ``postgres``."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def postgres_bin() -> Path | None:
    """The folder of initdb/pg_ctl (Debian's postgresql packages), or None."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_user() -> list[str]:
    """A prefix that runs a command as a non-root user (postgres refuses to run as root)."""
    if os.geteuid() != 0:
        return []
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return ["runuser", "-u", user, "--"]
    raise RuntimeError("running as root and there is no postgres or nobody user")


@contextmanager
def postgres_server(timeout: float = 60.0) -> Iterator[str]:
    """Start a server; yield a password-less URL to its ``postgres`` database on 127.0.0.1."""
    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError("no PostgreSQL binaries (apt-get install postgresql)")
    prefix = _as_user()
    root = Path(tempfile.mkdtemp(prefix="sweeper-pg-"))
    data = root / "data"
    try:
        if prefix:
            shutil.chown(root, user=prefix[2])
        run = {"check": True, "capture_output": True, "timeout": timeout}
        subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
            **run,  # type: ignore[call-overload]
        )
        port = _free_port()
        options = f"-k {root} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [
                *prefix,
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "-l",
                str(root / "server.log"),
                "start",
            ],
            **run,  # type: ignore[call-overload]
        )
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                capture_output=True,
                timeout=timeout,
                check=False,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
