"""Receivers from ``[receivers.<name>]`` tables: built-ins, plugins and the errors users see."""

from __future__ import annotations

import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from queuelens.alerting.channels import (
    EmailNotifier,
    PagerDutyNotifier,
    SlackNotifier,
    TeamsNotifier,
    WebhookNotifier,
)
from queuelens.alerting.channels.apprise import apprise_installed
from queuelens.alerting.receivers import build_receiver, load_receivers, plugin_factories
from queuelens.config import ConfigError

CONFIG = """
[receivers.ops-slack]
type = "slack"
url = "https://hooks.slack.com/services/T0/B0/SLACKTOKEN"

[receivers.ops-teams]
type = "teams"
url_env = "TEAMS_URL"
timeout_s = 5

[receivers.hooks]
type = "webhook"
url = "https://example.com/queuelens"
secret_env = "HOOK_SECRET"
headers = { Authorization = "Bearer HEADERTOKEN" }
max_attempts = 4

[receivers.oncall]
type = "pagerduty"
routing_key = "ROUTINGKEY123"
url = "https://events.eu.pagerduty.com/v2/enqueue"

[receivers.mail]
type = "email"
host = "smtp.example.com"
security = "ssl"
from = "queuelens@example.com"
to = ["ops@example.com"]
username = "queuelens"
password_env = "SMTP_PASSWORD"
"""
ENV = {
    "TEAMS_URL": "https://example.webhook.office.com/TEAMSTOKEN",
    "HOOK_SECRET": "HMACSECRET",
    "SMTP_PASSWORD": "SMTPPASSWORD",
}
SECRETS = ["SLACKTOKEN", "TEAMSTOKEN", "HMACSECRET", "HEADERTOKEN", "ROUTINGKEY123", "SMTPPASSWORD"]


def _load(text: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    return load_receivers(tomllib.loads(text)["receivers"], env=env or {})


def _error(fields: dict[str, Any], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        build_receiver("ops", fields, env=env or {})
    return str(caught.value)


def test_every_builtin_type_loads_from_toml() -> None:
    receivers = _load(CONFIG, ENV)

    assert list(receivers) == ["ops-slack", "ops-teams", "hooks", "oncall", "mail"]
    slack, teams, hooks, oncall, mail = receivers.values()
    assert isinstance(slack, SlackNotifier)
    assert slack.url.reveal() == "https://hooks.slack.com/services/T0/B0/SLACKTOKEN"
    assert isinstance(teams, TeamsNotifier)
    assert (teams.url.reveal(), teams.timeout_s) == (ENV["TEAMS_URL"], 5.0)
    assert isinstance(hooks, WebhookNotifier)
    assert hooks.secret is not None
    assert hooks.secret.reveal() == "HMACSECRET"
    assert hooks.headers["Authorization"].reveal() == "Bearer HEADERTOKEN"
    assert hooks.max_attempts == 4
    assert isinstance(oncall, PagerDutyNotifier)
    assert oncall.url == "https://events.eu.pagerduty.com/v2/enqueue"
    assert isinstance(mail, EmailNotifier)
    assert (mail.sender, mail.to, mail.security, mail.port) == (
        "queuelens@example.com",
        ("ops@example.com",),
        "ssl",
        None,
    )
    assert mail.password is not None
    assert mail.password.reveal() == "SMTPPASSWORD"


def test_reprs_of_loaded_receivers_hide_every_secret() -> None:
    shown = repr(_load(CONFIG, ENV))
    assert "ops-slack" in shown
    for secret in SECRETS:
        assert secret not in shown


def test_a_single_recipient_may_be_a_string() -> None:
    mail = build_receiver("m", {"type": "email", "host": "h", "from": "a@b", "to": "ops@b"})
    assert isinstance(mail, EmailNotifier)
    assert mail.to == ("ops@b",)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"url": "https://x"},
            "receiver 'ops': field 'type' is required; accepted: apprise, email, pagerduty, "
            "slack, teams, webhook",
        ),
        (
            {"type": "slak"},
            "receiver 'ops': type 'slak' is unknown; accepted: apprise, email, pagerduty, "
            "slack, teams, webhook",
        ),
        (
            {"type": "slack"},
            "receiver 'ops' (type 'slack'): field 'url' is required; "
            "accepted fields: url, timeout_s, max_attempts, backoff_s",
        ),
        (
            {"type": "slack", "url": "https://x/y", "timeout": 3},
            "receiver 'ops' (type 'slack'): field 'timeout' is not accepted; "
            "accepted fields: url, timeout_s, max_attempts, backoff_s",
        ),
        (
            {"type": "email", "host": "h", "to": ["a@b"], "security": "tls"},
            "receiver 'ops' (type 'email'): field 'from' is required; field 'security': "
            "Input should be 'starttls', 'ssl' or 'none'; accepted fields: host, from, to, "
            "port, security, username, password, timeout_s, ca_file",
        ),
        (
            {"type": "pagerduty", "routing_key": "", "timeout_s": "soon"},
            "receiver 'ops' (type 'pagerduty'): field 'routing_key': String should have at "
            "least 1 character; field 'timeout_s': Input should be a valid number, unable to "
            "parse string as a number; accepted fields: routing_key, url, source, timeout_s, "
            "max_attempts, backoff_s",
        ),
        (
            {"type": "webhook", "url": "ftp://host/SECRETPATH"},
            "receiver 'ops' (type 'webhook'): field 'url' must be an http:// or https:// URL "
            "(the value is not shown: it may hold a token)",
        ),
        (
            {"type": "teams", "url_env": "UNSET_VAR"},
            "receiver 'ops' (type 'teams'): field 'url_env' names environment variable "
            "'UNSET_VAR', which is not set",
        ),
        (
            {"type": "teams", "url": "https://a", "url_env": "X"},
            "receiver 'ops' (type 'teams'): set either 'url' or 'url_env', not both",
        ),
        ("slack", "receiver 'ops' must be a table, e.g. [receivers.ops] with type = \"slack\""),
    ],
)
def test_errors_say_which_receiver_which_field_and_what_is_accepted(
    fields: Any, message: str
) -> None:
    assert _error(fields) == message


def test_errors_never_quote_a_secret_value() -> None:
    message = _error({"type": "pagerduty", "routing_key": ["SECRETLIST"]})
    assert "routing_key" in message
    assert "SECRETLIST" not in message


@pytest.mark.skipif(apprise_installed(), reason="checks the message shown without apprise")
def test_apprise_without_the_package_says_how_to_install_it() -> None:
    assert _error({"type": "apprise", "urls": ["json://localhost"]}) == (
        "receiver 'ops' (type 'apprise') needs the apprise package: "
        "pip install 'queuelens[notify]' (or pip install apprise)"
    )


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real distribution on sys.path whose entry point adds the ``ntfy`` channel type."""
    (tmp_path / "queuelens_ntfy_plugin.py").write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass
            from queuelens.alerting.notify import Delivery, Secret

            @dataclass(frozen=True)
            class NtfyNotifier:
                name: str
                topic: Secret

                def send(self, notification):
                    return Delivery(self.name, True, 1)

            def factory(name, fields):
                if "topic" not in fields:
                    raise ValueError(f"topic is required (got {sorted(fields.values())})")
                return NtfyNotifier(name, Secret(fields["topic"]))

            def not_a_notifier(name, fields):
                return object()
            """
        )
    )
    dist = tmp_path / "queuelens_ntfy_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: queuelens-ntfy-plugin\n")
    (dist / "entry_points.txt").write_text(
        "[queuelens.notifiers]\n"
        "ntfy = queuelens_ntfy_plugin:factory\n"
        "broken = queuelens_ntfy_plugin:not_a_notifier\n"
        "slack = queuelens_ntfy_plugin:factory\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "queuelens_ntfy_plugin"
    sys.modules.pop("queuelens_ntfy_plugin", None)


def test_entry_point_plugins_add_channel_types(
    installed_plugin: str, caplog: pytest.LogCaptureFixture
) -> None:
    factories = plugin_factories()
    # A plugin cannot take over a built-in type name.
    assert sorted(factories) == ["broken", "ntfy"]
    assert "ignoring notifier plugin 'slack'" in caplog.text

    notifier = build_receiver("phone", {"type": "ntfy", "topic_env": "NTFY_TOPIC"},
                              env={"NTFY_TOPIC": "TOPICSECRET"})  # fmt: skip
    assert notifier.name == "phone"
    assert type(notifier).__module__ == installed_plugin
    assert "TOPICSECRET" not in repr(notifier)
    assert isinstance(build_receiver("s", {"type": "slack", "url": "https://x"}), SlackNotifier)


def test_plugin_errors_name_the_receiver_and_hide_values(installed_plugin: str) -> None:
    caught = _error({"type": "ntfy", "server": "SERVERTOKEN"})
    assert caught == "receiver 'ops' (type 'ntfy'): ValueError: topic is required (got ['***'])"
    assert _error({"type": "broken"}) == (
        "receiver 'ops' (type 'broken'): the plugin's factory returned no Notifier (no send method)"
    )
    assert "ntfy" in _error({"type": "nope"})
