"""Numbers read from a running node: RSS from /proc, counters from /metrics, /healthz."""

from __future__ import annotations

import re
import threading
import time
import urllib.request

__all__ = ["RssSampler", "healthz", "metric", "rss_kib"]

_RSS = re.compile(r"^VmRSS:\s+(\d+) kB", re.MULTILINE)


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (``VmRSS`` of /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        match = _RSS.search(f.read())
    assert match is not None, f"no VmRSS for pid {pid}"
    return int(match[1])


class RssSampler:
    """Samples a process's RSS every ``interval`` in a thread; ``peak`` is the largest seen."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval = pid, interval
        self.baseline = rss_kib(pid)
        self.peak = self.baseline
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
                self.samples += 1
            except OSError:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2.0)

    @property
    def growth_kib(self) -> int:
        return self.peak - self.baseline


def metric(health_url: str, name: str, timeout: float = 3.0) -> float:
    """The sum of every sample of ``name`` on the node's ``/metrics`` (0 when absent)."""
    with urllib.request.urlopen(f"{health_url}/metrics", timeout=timeout) as response:
        text = response.read().decode()
    total = 0.0
    for text_line in text.splitlines():
        if text_line.startswith(name) and text_line[len(name) : len(name) + 1] in (" ", "{"):
            total += float(text_line.rsplit(" ", 1)[1])
    return total


def healthz(health_url: str, timeout: float = 2.0) -> int:
    """HTTP status of ``/healthz`` (the node's event loop answers)."""
    started = time.monotonic()
    with urllib.request.urlopen(f"{health_url}/healthz", timeout=timeout) as response:
        assert time.monotonic() - started <= timeout
        return int(response.status)
