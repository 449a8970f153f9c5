"""Real server processes for end-to-end tests: caas-socket nodes and the conformance example.

A :class:`ServerProcess` runs one command, captures its output (stdout and
stderr merged) in a reader thread, learns its port from a log line and is
always stopped by PID: SIGTERM, then SIGKILL after a bound.  Nothing here
touches the reactor, so it works from plain and from Twisted tests alike;
:meth:`ServerProcess.log_match` is the non-blocking wait for the latter.

::

    with CaasNode(["--jwt-secret", SECRET, "--max-devices", "2"]).start() as node:
        ...  # node.url, node.port, node.pid, node.log
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

__all__ = [
    "CONFORMANCE_SERVER",
    "ROOT",
    "TWISTD",
    "CaasNode",
    "ConformanceServer",
    "ServerExited",
    "ServerProcess",
]

ROOT = Path(__file__).resolve().parents[2]
TWISTD = Path(sys.executable).parent / "twistd"
CONFORMANCE_SERVER = ROOT / "examples" / "conformance_server.py"

_LISTENING = r"listening on (?P<host>[0-9.]+):(?P<port>\d+)"


class ServerExited(RuntimeError):
    """The server process ended (or never became ready) when it should be running."""


class ServerProcess:
    """One server subprocess, its captured output and its lifecycle.

    :param argv: the command line.
    :param listening: regex with ``host`` and ``port`` groups, matched against
        output lines to learn where the server listens.
    :param ready: further regexes that must all have matched before
        :meth:`start` returns (e.g. "node ... started").
    :param env: added to (and overriding) a copy of the environment without ``CAAS_*``.
    """

    #: Every started process that has not been stopped yet (for failure reports).
    live: ClassVar[weakref.WeakSet[ServerProcess]] = weakref.WeakSet()

    def __init__(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        listening: str = _LISTENING,
        ready: Sequence[str] = (),
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
        name: str | None = None,
    ) -> None:
        self.argv = [os.fspath(a) for a in argv]
        self.name = name or Path(self.argv[0]).name
        self._listening = re.compile(listening)
        self._ready = [re.compile(p) for p in ready]
        self._env = env or {}
        self._cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._reader: threading.Thread | None = None
        self.host: str | None = None
        self.port: int | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} pid={self.pid} port={self.port}>"

    # -- state -----------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise ServerExited(f"{self.name} was never started")
        return self._proc.pid

    @property
    def url(self) -> str:
        """``ws://host:port``, what socket.io-client takes."""
        return f"ws://{self.host}:{self.port}"

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def lines(self) -> list[str]:
        """The output so far, one entry per line (a copy)."""
        with self._changed:
            return list(self._lines)

    @property
    def log(self) -> str:
        """The output so far, as text."""
        return "\n".join(self.lines)

    def mark(self) -> int:
        """A position in the output: pass it as ``since`` to look only at later lines."""
        with self._changed:
            return len(self._lines)

    # -- starting ----------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> Self:
        """Spawn the process and wait until it listens (and every ``ready`` line appeared).

        :raises ServerExited: with the captured output if it exits or is not ready in time.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAAS_")}
        env.update(PYTHONUNBUFFERED="1", **self._env)
        self._proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self._cwd,
            env=env,
            start_new_session=True,  # a Ctrl-C of the test run is ours to forward, by PID
        )
        ServerProcess.live.add(self)
        self._reader = threading.Thread(
            target=self._read, name=f"{self.name}-{self._proc.pid}-output", daemon=True
        )
        self._reader.start()
        try:
            match = self.wait_for_log(self._listening, timeout)
            self.host, self.port = match["host"], int(match["port"])
            deadline = time.monotonic() + timeout
            for pattern in self._ready:
                self.wait_for_log(pattern, max(deadline - time.monotonic(), 0.0))
        except BaseException:
            self.kill()
            raise
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    # -- reading the output ----------------------------------------------------

    def find(self, pattern: str | re.Pattern[str], since: int = 0) -> re.Match[str] | None:
        """The first match of ``pattern`` in an output line at or after ``since``."""
        regex = re.compile(pattern)
        with self._changed:
            for line in self._lines[since:]:
                match = regex.search(line)
                if match:
                    return match
        return None

    def wait_for_log(
        self, pattern: str | re.Pattern[str], timeout: float = 5.0, since: int = 0
    ) -> re.Match[str]:
        """Block until an output line matches ``pattern``.

        :raises ServerExited: when the process ends first.
        :raises TimeoutError: with the output, when ``timeout`` passes first.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            seen = since
            while True:
                for line in self._lines[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = max(seen, len(self._lines))
                reader_done = self._reader is not None and not self._reader.is_alive()
                if reader_done:
                    raise ServerExited(
                        f"{self.name} (pid {self.pid}) exited with {self.returncode} before"
                        f" logging {regex.pattern!r}; output:\n{self._tail()}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{self.name} (pid {self.pid}) did not log {regex.pattern!r} within"
                        f" {timeout}s; output:\n{self._tail()}"
                    )
                self._changed.wait(min(left, 0.1))

    async def log_match(
        self, pattern: str | re.Pattern[str], timeout: float = 5.0, since: int = 0
    ) -> re.Match[str]:
        """:meth:`wait_for_log` for Twisted tests: polls, never blocks the reactor."""
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        deadline = time.monotonic() + timeout
        while True:
            match = self.find(pattern, since)
            if match:
                return match
            if not self.running:
                raise ServerExited(
                    f"{self.name} (pid {self.pid}) exited with {self.returncode}; output:\n"
                    + self._tail()
                )
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self.name} (pid {self.pid}) did not log {pattern!r} within {timeout}s;"
                    f" output:\n{self._tail()}"
                )
            await deferLater(reactor, 0.02, lambda: None)

    def _tail(self, count: int = 60) -> str:
        return "\n".join(self._lines[-count:])

    # -- signals -----------------------------------------------------------------

    def _signal(self, signum: int) -> None:
        if self.running:
            os.kill(self.pid, signum)

    def pause(self) -> None:
        """SIGSTOP: the process stays connected but answers nothing (a hung node)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._signal(signal.SIGCONT)

    def terminate(self) -> None:
        """SIGTERM without waiting: the caller watches what clients see meanwhile."""
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGTERM)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL if still running after ``timeout``; returns the exit status."""
        if self._proc is None:
            return None
        if self.running:
            self.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
        return self._finish()

    def kill(self) -> int | None:
        """SIGKILL (a crashed node: no goodbye to anyone)."""
        if self._proc is None:
            return None
        self._signal(signal.SIGKILL)
        return self._finish()

    def wait(self, timeout: float = 5.0) -> int:
        """Wait for the process to end by itself (after :meth:`terminate`)."""
        assert self._proc is not None
        self._proc.wait(timeout)
        return self._finish()  # type: ignore[return-value]

    def _finish(self) -> int | None:
        assert self._proc is not None
        try:
            code = self._proc.wait(5.0)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
            code = None
        if self._reader is not None:
            self._reader.join(2.0)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        ServerProcess.live.discard(self)
        return code

    def __enter__(self) -> Self:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class CaasNode(ServerProcess):
    """``twistd -n --pidfile= caas-socket --listen tcp:0:interface=127.0.0.1 [args]``.

    Ready once it listens and logged "node ... started" (its registry lease is
    taken), so clients can connect at once.  Give ``--listen`` in ``args`` to
    replace the default listener.
    """

    def __init__(self, args: Sequence[str] = (), **kwargs: Any) -> None:
        listen = [] if "--listen" in args else ["--listen", "tcp:0:interface=127.0.0.1"]
        if "--health-listen" not in args:
            # never the default 9090: several nodes run at once
            listen += ["--health-listen", "tcp:0:interface=127.0.0.1"]
        kwargs.setdefault("name", "caas-socket")
        kwargs.setdefault("ready", [r"node \S+ started"])
        super().__init__(
            [TWISTD, "-n", "--pidfile=", "caas-socket", *listen, *args],
            listening=r"socket\.io " + _LISTENING,
            **kwargs,
        )
        self.args = list(args)

    @property
    def health_url(self) -> str:
        """``http://host:port`` of /healthz, /readyz and /metrics."""
        match = self.find(r"health " + _LISTENING)
        if match is None:
            raise ServerExited(f"{self.name} did not log its health listener")
        return f"http://{match['host']}:{match['port']}"


class ConformanceServer(ServerProcess):
    """``examples/conformance_server.py`` on a free port of 127.0.0.1."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("name", "conformance-server")
        super().__init__(
            [sys.executable, CONFORMANCE_SERVER, "--host", "127.0.0.1", "--port", "0"],
            listening=r"conformance server " + _LISTENING,
            **kwargs,
        )
