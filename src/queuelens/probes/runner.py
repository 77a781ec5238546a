"""Run queue depth probes on a schedule and store what they read as gauges.

    configs = probe_configs_from_toml("queuelens.toml")       # the [[probes]] tables
    runner = ProbeRunner([build_probe(c) for c in configs], storage)
    samples = runner.run_once()                                # read, store, return

A ``[[probes]]`` table in ``queuelens.toml``::

    [[probes]]
    framework = "rq"                       # celery, rq, dramatiq, huey, arq or taskiq
    broker_url = "redis://localhost:6379/0"
    app = "billing"                        # default: the app setting
    queues = ["default", "emails"]         # default: every queue the broker knows of
    [probes.options]                       # framework-specific, see docs/integrations/
    global_keyprefix = "prod:"

One failing probe never stops the others; its error is logged and counted.
"""

from __future__ import annotations

import logging
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

from queuelens.config import ConfigError
from queuelens.model import GaugeSample
from queuelens.probes import FRAMEWORKS, ProbeConfig, QueueProbe
from queuelens.storage.base import Storage

__all__ = ["ProbeRunner", "probe_configs", "probe_configs_from_toml"]

log = logging.getLogger("queuelens.probes")

_KEYS = {"framework", "broker_url", "app", "queues", "options"}


def probe_configs_from_toml(path: str | Path, default_app: str = "default") -> list[ProbeConfig]:
    """The ``[[probes]]`` tables of a TOML file; ConfigError names a bad entry and field."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc}") from None
    return probe_configs(data.get("probes", []), default_app, where=str(path))


def probe_configs(
    entries: object, default_app: str = "default", where: str = "probes"
) -> list[ProbeConfig]:
    """Validate raw ``[[probes]]`` entries into :class:`ProbeConfig` objects."""
    if not isinstance(entries, list):
        raise ConfigError(f"probes in {where!r} must be an array of tables ([[probes]])")
    configs = []
    for n, entry in enumerate(entries, start=1):
        label = f"probes #{n} in {where!r}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{label} must be a table")
        unknown = set(entry) - _KEYS
        if unknown:
            raise ConfigError(
                f"{label} has unknown key(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(_KEYS))}"
            )
        framework = entry.get("framework")
        if framework not in FRAMEWORKS:
            raise ConfigError(
                f"{label}: framework {framework!r} is not one of {', '.join(FRAMEWORKS)}"
            )
        broker_url = entry.get("broker_url")
        if not isinstance(broker_url, str) or "://" not in broker_url:
            raise ConfigError(
                f"{label}: broker_url {broker_url!r} is not a URL; "
                "e.g. redis://localhost:6379/0 or amqp://guest:guest@localhost:5672//"
            )
        queues = entry.get("queues", [])
        if not isinstance(queues, list) or not all(isinstance(q, str) for q in queues):
            raise ConfigError(f'{label}: queues must be a list of names, e.g. ["default"]')
        options = entry.get("options", {})
        if not isinstance(options, dict):
            raise ConfigError(f"{label}: options must be a table")
        app = entry.get("app", default_app)
        if not isinstance(app, str) or not app:
            raise ConfigError(f"{label}: app {app!r} must be a non-empty name")
        configs.append(ProbeConfig(framework, broker_url, app, list(queues), dict(options)))
    return configs


class ProbeRunner:
    """Samples every probe and writes the samples to storage, once or on an interval."""

    def __init__(
        self,
        probes: Sequence[QueueProbe],
        storage: Storage,
        *,
        interval_s: float = 15.0,
        on_sample: Callable[[list[GaugeSample]], None] | None = None,
    ) -> None:
        self.probes = list(probes)
        self.storage = storage
        self.interval_s = interval_s
        self.on_sample = on_sample
        self.failures: dict[str, int] = {}
        self._stop = threading.Event()

    def run_once(self) -> list[GaugeSample]:
        samples: list[GaugeSample] = []
        for probe in self.probes:
            name = f"{probe.config.framework} {probe.config.broker_url.split('@')[-1]}"
            try:
                samples.extend(probe.sample())
            except Exception as exc:
                self.failures[name] = self.failures.get(name, 0) + 1
                log.warning("queuelens: probe %s failed: %s", name, exc)
        if samples:
            self.storage.write_gauges(samples)
        if self.on_sample is not None:
            self.on_sample(samples)
        return samples

    def run_forever(self) -> None:
        """Sample every ``interval_s`` until :meth:`stop`; storage errors are logged."""
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.run_once()
            except Exception as exc:
                log.warning("queuelens: storing probe samples failed: %s", exc)
            self._stop.wait(max(self.interval_s - (time.monotonic() - started), 0.0))

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.stop()
        for probe in self.probes:
            try:
                probe.close()
            except Exception:  # pragma: no cover - closing must not fail a shutdown
                log.exception("queuelens: closing a probe failed")
