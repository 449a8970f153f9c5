"""A throw-away ``redis-server`` (or Sentinel) process for tests.

Each instance owns a temporary directory and a free port on 127.0.0.1 (never
6379: a shared Redis lives there).  It can be stopped and started again on the
same port (coming back empty, as after a crash without persistence) and paused
with SIGSTOP to play a hung server.  Everything here is synchronous: fixtures
call it outside the reactor, and a test may block the reactor for the few
milliseconds a restart takes.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

__all__ = ["RedisServer", "free_port", "redis_command"]

SHARED_PORT = 6379
MISSING = "redis-server not found on PATH: install redis-server; .ci/run does"


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1, never the shared 6379."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != SHARED_PORT:
            return port


def _encode(*args: str | bytes | int) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def _read_reply(f: BinaryIO) -> object:
    line = f.readline()
    if not line:
        raise ConnectionError("Redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else f.read(size + 2)[:-2]
    if kind == b"*":
        size = int(rest)
        return None if size < 0 else [_read_reply(f) for _ in range(size)]
    raise RuntimeError(f"unexpected reply {line!r}")


def redis_command(port: int, *args: str | bytes | int, timeout: float = 2.0) -> object:
    """Send one command over a fresh blocking connection and return the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(_encode(*args))
        with s.makefile("rb") as f:
            return _read_reply(f)


class RedisServer:
    """One ``redis-server`` process; see the module docstring.

    :param extra_args: more ``redis-server`` options (e.g. ``--tls-port``).
    :param config: lines of a configuration file given first (Sentinel needs one).
    """

    host = "127.0.0.1"

    def __init__(
        self, extra_args: Sequence[str] = (), config: Sequence[str] = (), sentinel: bool = False
    ) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError(MISSING)
        self.directory = Path(tempfile.mkdtemp(prefix="caas-redis-"))
        self.port = free_port()
        self._extra, self._config, self._sentinel = list(extra_args), list(config), sentinel
        self._process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start (again, on the same port, empty) and wait until PING answers."""
        if self.running:
            return
        args = ["redis-server"]
        if self._config:
            conf = self.directory / "redis.conf"
            conf.write_text("\n".join(self._config) + "\n")
            args.append(str(conf))
        if self._sentinel:
            args.append("--sentinel")
        args += ["--port", str(self.port), "--bind", self.host, "--dir", str(self.directory)]
        args += ["--logfile", str(self.directory / "redis.log")]
        if not self._sentinel:
            args += ["--save", "", "--appendonly", "no"]
        args += self._extra
        self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        self.paused = False
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited {self._process.returncode}: {self._log()}")
            try:
                if redis_command(self.port, "PING", timeout=0.5) == "PONG":
                    return
            except (OSError, RuntimeError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING: {self._log()}")
            time.sleep(0.02)

    def _log(self) -> str:
        try:
            return (self.directory / "redis.log").read_text()[-2000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Kill the process (SIGKILL: no shutdown save) and wait for it."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        self.paused = False

    def restart(self) -> None:
        """Stop, then start empty on the same port."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing answers."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGCONT)
        self.paused = False

    def command(self, *args: str | bytes | int) -> object:
        return redis_command(self.port, *args)

    def close(self) -> None:
        """Stop for good and remove the directory."""
        if self.paused:
            self.resume()
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
