"""open_analytics takes retention from the settings and thresholds from queuelens.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from queuelens.analytics import open_analytics
from queuelens.config import ConfigError, load_settings
from queuelens.storage import open_storage


def test_thresholds_and_capacity_come_from_the_settings_file(tmp_path: Path) -> None:
    path = tmp_path / "queuelens.toml"
    path.write_text(
        'retention_minute = "1d"\n'
        '[health]\nwait_p95_target = "5s"\n[health.queues.reports]\nwait_p95_target = "10m"\n'
        "[capacity]\nprice_per_cpu_hour = 0.04\n"
    )
    storage = open_storage(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        analytics, insights = open_analytics(storage, load_settings(path, env={}), path)
        assert analytics.retention.minute_s == 86400
        assert analytics.thresholds.wait_p95_target_s == 5.0
        assert analytics.thresholds.for_queue("reports").wait_p95_target_s == 600.0
        assert insights.capacity.price_per_cpu_hour == 0.04
        path.write_text('[health]\nwait_p95_target = "never"\n')
        with pytest.raises(ConfigError, match="wait_p95_target = 'never' in \\[health\\]"):
            open_analytics(storage, load_settings(path, env={}), path)
    finally:
        storage.close()
