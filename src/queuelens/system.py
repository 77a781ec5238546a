"""Server resources: CPU, load, memory, swap, disks and network of this host.

    sample = sample_server(app="billing")            # one GaugeSample(kind="server")
    sampler = ServerSampler(storage, app="billing", interval_s=15)
    sampler.start()                                  # one sampler per host, by lease

Every worker process may start a sampler; a lease in storage named after the host makes
exactly one of them sample at a time, and another takes over within ``2 * interval_s`` if
the holder dies. Field names (``values`` of the sample):

``cpu_percent``, ``load_1``, ``load_5``, ``load_15``, ``cpu_count``, ``memory_total_mb``,
``memory_used_mb``, ``memory_percent``, ``swap_total_mb``, ``swap_used_mb``,
``swap_percent``, ``net_in_bytes_per_s``, ``net_out_bytes_per_s`` and, per mounted disk,
``disk:<mount>:total_gb``, ``disk:<mount>:used_gb`` and ``disk:<mount>:percent``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

import psutil

from queuelens.model import GaugeSample
from queuelens.storage.base import Storage

__all__ = ["ServerSampler", "sample_server"]

log = logging.getLogger("queuelens.system")

_MB = 1024 * 1024
_GB = 1024 * _MB
# Pseudo and container-internal file systems say nothing about a host's disks.
_SKIP_FSTYPES = frozenset({"squashfs", "tmpfs", "devtmpfs", "overlay", "proc", "sysfs"})


class _NetRate:
    """Bytes per second between consecutive calls (None on the first)."""

    def __init__(self) -> None:
        self._last: tuple[float, int, int] | None = None

    def read(self) -> tuple[float | None, float | None]:
        counters = psutil.net_io_counters()
        now = time.monotonic()
        previous, self._last = self._last, (now, counters.bytes_recv, counters.bytes_sent)
        if previous is None or now <= previous[0]:
            return None, None
        elapsed = now - previous[0]
        return (
            max(counters.bytes_recv - previous[1], 0) / elapsed,
            max(counters.bytes_sent - previous[2], 0) / elapsed,
        )


def sample_server(
    app: str = "default", hostname: str | None = None, net: _NetRate | None = None
) -> GaugeSample:
    """Read this host's resources now. CPU % is since the previous call in this process
    (the first call measures over 0.1 s), not since boot."""
    values: dict[str, float] = {}
    values["cpu_percent"] = psutil.cpu_percent(interval=None if _cpu_primed() else 0.1)
    values["cpu_count"] = float(psutil.cpu_count() or 1)
    load_1, load_5, load_15 = os.getloadavg() if hasattr(os, "getloadavg") else (0.0,) * 3
    values.update(load_1=load_1, load_5=load_5, load_15=load_15)
    memory = psutil.virtual_memory()
    values["memory_total_mb"] = memory.total / _MB
    values["memory_used_mb"] = (memory.total - memory.available) / _MB
    values["memory_percent"] = memory.percent
    swap = psutil.swap_memory()
    values["swap_total_mb"] = swap.total / _MB
    values["swap_used_mb"] = swap.used / _MB
    values["swap_percent"] = swap.percent
    for partition in psutil.disk_partitions(all=False):
        if partition.fstype in _SKIP_FSTYPES:
            continue
        try:
            usage = psutil.disk_usage(partition.mountpoint)
        except OSError:  # unreadable mount (permissions, gone): skip it
            continue
        prefix = f"disk:{partition.mountpoint}:"
        values[prefix + "total_gb"] = usage.total / _GB
        values[prefix + "used_gb"] = usage.used / _GB
        values[prefix + "percent"] = usage.percent
    if net is not None:
        inbound, outbound = net.read()
        if inbound is not None and outbound is not None:
            values["net_in_bytes_per_s"] = inbound
            values["net_out_bytes_per_s"] = outbound
    return GaugeSample("server", app, hostname or socket.gethostname(), values, time.time())


_primed = False


def _cpu_primed() -> bool:
    global _primed
    was, _primed = _primed, True
    return was


class ServerSampler:
    """Samples this host every ``interval_s`` while it holds the host's lease."""

    def __init__(
        self,
        storage: Storage | Callable[[], Storage],
        *,
        app: str = "default",
        interval_s: float = 15.0,
        hostname: str | None = None,
    ) -> None:
        self._storage = storage if isinstance(storage, Storage) else None
        self._factory = None if isinstance(storage, Storage) else storage
        self.app = app
        self.interval_s = interval_s
        self.hostname = hostname or socket.gethostname()
        self.owner = f"{self.hostname}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = f"server-sampler:{self.hostname}"
        self.samples_written = 0
        self.failures = 0
        self._net = _NetRate()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> bool:
        """Sample and store if this process holds (or takes) the lease. Never raises."""
        try:
            storage = self._storage
            if storage is None:
                assert self._factory is not None
                storage = self._storage = self._factory()
            if not storage.acquire_lease(self.lease, self.owner, 2 * self.interval_s):
                return False
            storage.write_gauges([sample_server(self.app, self.hostname, self._net)])
            self.samples_written += 1
            return True
        except Exception as exc:
            self.failures += 1
            if self.failures == 1 or self.failures % 100 == 0:
                log.warning("queuelens: sampling server resources failed: %s", exc)
            return False

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="queuelens-server", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        try:
            if self._storage is not None:
                self._storage.release_lease(self.lease, self.owner)
        except Exception:  # a sampler's shutdown must not fail its worker
            log.debug("queuelens: releasing the server lease failed", exc_info=True)
