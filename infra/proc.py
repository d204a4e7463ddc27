"""Detached server processes: pid files, liveness, ports, log tails, stopping."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil


class InfraError(RuntimeError):
    """A local server could not be started, reached or stopped; the message says why."""


class PortInUseError(InfraError):
    """A port a local server needs is held by some other process."""


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (zombies of our own children are reaped)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def cmdline(pid: int) -> str:
    """The command line of ``pid`` ('' if it is gone or hidden)."""
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MiB (None if unknown)."""
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def read_pid(pid_file: Path, marker: str) -> int | None:
    """The live pid recorded in ``pid_file`` whose command line contains ``marker``, else None.

    The marker (a path unique to this instance) guards against a recycled pid.
    """
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if pid_alive(pid) and marker in cmdline(pid):
        return pid
    return None


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on ``host:port`` (we could bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_owner(port: int) -> str:
    """Best-effort description of who listens on ``port`` (pid and command), or ''."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return f"pid {conn.pid}: {cmdline(conn.pid)[:200]}"
    except (psutil.AccessDenied, OSError):
        pass
    return ""


def check_ports_free(ports: dict[str, int], server: str, env_hint: dict[str, str], host: str = "127.0.0.1") -> None:
    """Raise PortInUseError naming every busy port of ``ports`` ({purpose: port}) on ``host``."""
    busy = [(what, port) for what, port in ports.items() if not port_free(port, host)]
    if not busy:
        return
    lines = []
    for what, port in busy:
        owner = port_owner(port)
        hint = f" (set {env_hint[what]} to use another)" if what in env_hint else ""
        lines.append(f"  {host}:{port} ({what}){hint}" + (f"\n    held by: {owner}" if owner else ""))
    raise PortInUseError(
        f"cannot start {server}: port(s) already in use by another process:\n"
        + "\n".join(lines)
        + f"\nStop that process or choose other ports. If it is a {server} you run yourself, "
        "skip `vista infra up` and run `vista infra init`."
    )


def tail(path: Path, lines: int = 40) -> str:
    """Last ``lines`` lines of a text file ('' if missing)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def spawn(cmd: list[str], *, cwd: Path, out_file: Path, pid_file: Path, env: dict[str, str] | None = None) -> int:
    """Start ``cmd`` detached (own session, stdin closed, output to ``out_file``); write its pid."""
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with out_file.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            close_fds=True,
        )
    # Let the Popen object go without a ResourceWarning: pid_alive() reaps the child.
    proc.returncode = 0
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def stop(pid: int, *, timeout: float = 60.0, name: str = "process") -> bool:
    """SIGTERM ``pid`` and wait; SIGKILL after ``timeout``. Returns True if it exited cleanly."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid):
        raise InfraError(f"{name} (pid {pid}) did not exit even after SIGKILL")
    return False


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    alive: Callable[[], bool],
    what: str,
    log_files: list[Path],
    interval: float = 0.25,
    last_error: Callable[[], str] | None = None,
) -> float:
    """Poll ``check`` until it is True; returns seconds waited.

    Fails fast (with the log tail) if the process dies, and after ``timeout`` seconds.
    """
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if not alive():
            raise InfraError(f"{what} exited during startup.\n{_log_tails(log_files)}")
        if time.monotonic() - start > timeout:
            err = last_error() if last_error else ""
            raise InfraError(
                f"{what} did not become ready within {timeout:.0f}s"
                + (f" (last error: {err})" if err else "")
                + f".\n{_log_tails(log_files)}"
            )
        time.sleep(interval)


def await_ready(
    *,
    name: str,
    pid: int,
    started: bool,
    port: int,
    probe: Callable[[], tuple[bool, str]],
    dirs: "ServerDirs",
    timeout: float,
    interval: float = 0.25,
    host: str = "127.0.0.1",
) -> None:
    """Wait until the server answers ``probe`` on ``host:port``. One that this call's caller `started` and that
    never became ready is stopped (its logs stay for inspection), so a failed start leaves nothing half-up."""
    last = [""]

    def ready() -> bool:
        if not port_open(port, host):
            last[0] = f"port {host}:{port} not open yet"
            return False
        ok, last[0] = probe()
        return ok

    try:
        wait_until(ready, timeout=timeout, alive=lambda: pid_alive(pid), what=f"{name} (pid {pid}, {host}:{port})",
                   log_files=[dirs.server_log, dirs.out_file], interval=interval, last_error=lambda: last[0])
    except InfraError:
        if started:
            stop(pid, timeout=30, name=name)
            dirs.pid_file.unlink(missing_ok=True)
        raise


def start_server(*, name: str, pid: int | None, launch: Callable[[], int], port: int,
                 probe: Callable[[], tuple[bool, str]], dirs: "ServerDirs", timeout: float,
                 interval: float = 0.25, host: str = "127.0.0.1") -> dict[str, Any]:
    """Start a local server unless `pid` (the running one) says it is up, then wait until `probe` answers.

    `launch` prepares the server's files, spawns it and returns its pid. Returns {"pid", "started", "seconds"}."""
    t0 = time.monotonic()
    started = pid is None
    if pid is None:
        pid = launch()
    await_ready(name=name, pid=pid, started=started, port=port, probe=probe, dirs=dirs, timeout=timeout,
                interval=interval, host=host)
    return {"pid": pid, "started": started, "seconds": time.monotonic() - t0}


def server_status(server: str, pid: int | None, probe: tuple[bool, str], **where: Any) -> dict[str, Any]:
    """The `status` report of a local server: where it listens, its process (if local) and its health."""
    ok, err = probe
    return {"server": server, **where, "pid": pid, "rss_mb": rss_mb(pid) if pid else None, "ready": ok,
            "error": err or None}


def stop_server(pid: int | None, dirs: "ServerDirs", name: str, timeout: float) -> bool:
    """Stop a local server (SIGTERM, then SIGKILL after ``timeout``) and drop its pid file. True if one ran."""
    if pid is not None:
        stop(pid, timeout=timeout, name=name)
    dirs.pid_file.unlink(missing_ok=True)
    return pid is not None


def wipe_server(pid: int | None, dirs: "ServerDirs", name: str) -> None:
    """Delete a stopped local server's files (config, data, logs)."""
    if pid is not None:
        raise InfraError(f"{name} is running; stop it before wiping its data")
    shutil.rmtree(dirs.root, ignore_errors=True)


def _log_tails(paths: list[Path]) -> str:
    parts = []
    for p in paths:
        t = tail(p)
        if t:
            parts.append(f"--- last lines of {p} ---\n{t}")
    return "\n".join(parts) if parts else "(no server log written)"


@dataclass(frozen=True)
class ServerDirs:
    """Where one local server keeps its files: root/{conf,data,logs}, root/<name>.pid, logs/<name>.out
    (its stdout) and logs/<log_name> (the server's own log, tailed when it fails to start)."""

    root: Path
    name: str
    log_name: str

    @property
    def conf(self) -> Path:
        return self.root / "conf"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pid_file(self) -> Path:
        return self.root / f"{self.name}.pid"

    @property
    def out_file(self) -> Path:
        return self.logs / f"{self.name}.out"

    @property
    def server_log(self) -> Path:
        return self.logs / self.log_name
