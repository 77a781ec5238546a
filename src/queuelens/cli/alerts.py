"""``queuelens alerts``: the rules in force, their Prometheus export, and test notifications.

queuelens alerts rules                       # defaults plus [[rules]] from queuelens.toml
queuelens alerts export-prometheus -o queuelens.rules.yml
queuelens alerts test oncall                 # a test notification to [receivers.oncall]
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from queuelens.cli._app import JsonOutput, config_path, console, print_json
from queuelens.config import ConfigError

__all__ = ["alerts"]

alerts = typer.Typer(name="alerts", no_args_is_help=True)


@alerts.callback()
def _alerts() -> None:
    """Alert rules and receivers: list the rules, export them for Prometheus, test a receiver.

    Examples:

    ```
    queuelens alerts rules
    queuelens alerts export-prometheus -o queuelens.rules.yml
    queuelens alerts test oncall
    ```
    """


RulesFile = Annotated[
    Path | None,
    typer.Option(
        "--rules",
        help="a file of [[rules]] tables, read after queuelens.toml's own",
        dir_okay=False,
    ),
]


def _rules(ctx: typer.Context, rules_file: Path | None, defaults: bool = True) -> list[Any]:
    from queuelens.alerting.rules import load_rules

    if rules_file is not None and not rules_file.is_file():
        raise ConfigError(
            f"--rules {str(rules_file)!r} is not a file; give a TOML file of [[rules]]"
        )
    return load_rules(config_path(ctx), rules_path=rules_file, defaults=defaults)


@alerts.command("rules")
def rules(ctx: typer.Context, rules_file: RulesFile = None, as_json: JsonOutput = False) -> None:
    """List the alert rules in force: the defaults, then yours (which may change them).

    Examples:

    ```
    queuelens alerts rules
    queuelens alerts rules --rules alerts.toml --json
    ```
    """
    loaded = _rules(ctx, rules_file)
    if as_json:
        print_json([_rule_dict(rule) for rule in loaded])
        return
    from rich.table import Table

    table = Table("name", "kind", "metric", "when", "for", "severity", "enabled")
    for rule in loaded:
        when = f"{rule.op} {rule.threshold:g}" if rule.op else ""
        table.add_row(
            rule.name, str(rule.kind), rule.metric, when, f"{rule.for_s:g}s",
            str(rule.severity), "yes" if rule.enabled else "no",
        )  # fmt: skip
    console().print(table)


def _rule_dict(rule: Any) -> dict[str, Any]:
    out = asdict(rule)
    out["scope"] = {k: list(v) for k, v in asdict(rule.scope).items()}
    return out


@alerts.command("export-prometheus")
def export_prometheus(
    ctx: typer.Context,
    rules_file: RulesFile = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="write here instead of stdout")
    ] = None,
) -> None:
    """Write the rules as Prometheus alerting rules YAML (promtool check rules accepts it).

    For teams that run Alertmanager: the rules read queuelens' own /metrics. Rules with no
    PromQL equivalent (anomalies) are left out with a comment saying why.

    Examples:

    ```
    queuelens alerts export-prometheus > queuelens.rules.yml
    queuelens alerts export-prometheus --rules alerts.toml -o /etc/prometheus/queuelens.yml
    ```
    """
    from queuelens.alerting.rules_prometheus import export_prometheus_rules

    text = export_prometheus_rules(_rules(ctx, rules_file))
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {str(output)!r}: {exc.strerror or exc}") from None
    typer.echo(f"wrote {str(output)!r}", err=True)


@alerts.command("test")
def send_test_notification(
    ctx: typer.Context,
    receiver: Annotated[str, typer.Argument(help="a receiver named in [receivers.<name>]")],
    timeout: Annotated[float, typer.Option(help="seconds to wait for the receiver")] = 30.0,
) -> None:
    """Send a test notification to one receiver and say whether it arrived.

    Receivers are the `[receivers.<name>]` tables of queuelens.toml (see docs/alerting.md).
    Exit code 1 when the delivery failed.

    Examples:

    ```
    queuelens alerts test oncall
    queuelens --config prod.toml alerts test slack-ops --timeout 10
    ```
    """
    from queuelens.alerting.notify import send_test
    from queuelens.alerting.receivers import build_receiver
    from queuelens.config import load_table

    table = load_table("receivers", config_path(ctx)) or {}
    if receiver not in table:
        known = ", ".join(sorted(table)) or "none configured"
        raise ConfigError(f"no receiver {receiver!r} in [receivers]; known: {known}")
    delivery = send_test(build_receiver(receiver, table[receiver]), timeout_s=timeout)
    if delivery.ok:
        typer.echo(
            f"{receiver}: delivered in {delivery.duration_s:.2f}s ({delivery.attempts} attempt(s))"
        )
        return
    typer.echo(
        f"{receiver}: FAILED after {delivery.attempts} attempt(s): {delivery.error}", err=True
    )
    raise typer.Exit(1)
