"""Receivers from the ``[receivers.<name>]`` tables of queuelens.toml, validated up front.

    notifiers = load_receivers(load_table("receivers") or {})   # {"ops-slack": SlackNotifier(…)}

    [receivers.ops-slack]
    type = "slack"
    url_env = "QUEUELENS_OPS_SLACK_URL"    # any field can be read from the environment

Types: the built-ins in :data:`BUILTIN_TYPES`, then entry points in the ``queuelens.notifiers``
group, each a factory ``(name, fields) -> Notifier``. Errors name the receiver, the field and
what is accepted, and never quote a value (it may be a secret).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import fields as dataclass_fields
from importlib.metadata import entry_points
from typing import Any

from pydantic import TypeAdapter, ValidationError

from queuelens.alerting.channels import (
    AppriseNotifier,
    EmailNotifier,
    PagerDutyNotifier,
    SlackNotifier,
    TeamsNotifier,
    WebhookNotifier,
)
from queuelens.alerting.channels.apprise import INSTALL_HINT, apprise_installed
from queuelens.alerting.notify import Notifier
from queuelens.config import ConfigError

__all__ = [
    "BUILTIN_TYPES",
    "ENTRY_POINT_GROUP",
    "NotifierFactory",
    "build_receiver",
    "load_receivers",
    "plugin_factories",
]

logger = logging.getLogger("queuelens.alerting.receivers")

ENTRY_POINT_GROUP = "queuelens.notifiers"
#: a plugin's entry point: called with the receiver name and its table (``type`` removed)
NotifierFactory = Callable[[str, Mapping[str, Any]], Notifier]

BUILTIN_TYPES: dict[str, type[Any]] = {
    "slack": SlackNotifier,
    "teams": TeamsNotifier,
    "webhook": WebhookNotifier,
    "pagerduty": PagerDutyNotifier,
    "email": EmailNotifier,
    "apprise": AppriseNotifier,
}
#: names users write that are not Python identifiers (``from``) → the dataclass field
_RENAMED = {"email": {"from": "sender"}}
#: fields that hold a URL we POST to
_URL_FIELDS = {"slack": "url", "teams": "url", "webhook": "url", "pagerduty": "url"}
_ENV_SUFFIX = "_env"


def load_receivers(
    table: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> dict[str, Notifier]:
    """Every receiver of a ``[receivers]`` table, by name; ConfigError on the first bad one."""
    return {name: build_receiver(name, fields, env) for name, fields in table.items()}


def build_receiver(name: str, fields: Any, env: Mapping[str, str] | None = None) -> Notifier:
    """One receiver from its table: ``{"type": "slack", "url": "https://…"}``."""
    where = f"receiver {name!r}"
    if not isinstance(fields, Mapping):
        raise ConfigError(f'{where} must be a table, e.g. [receivers.{name}] with type = "slack"')
    options = dict(fields)
    kind = options.pop("type", None)
    plugins = plugin_factories()
    accepted = ", ".join(sorted({*BUILTIN_TYPES, *plugins}))
    if not isinstance(kind, str):
        raise ConfigError(f"{where}: field 'type' is required; accepted: {accepted}")
    where = f"receiver {name!r} (type {kind!r})"
    options = _resolve_env(where, options, os.environ if env is None else env)
    if kind in BUILTIN_TYPES:
        return _build_builtin(where, name, kind, options)
    if kind in plugins:
        return _build_plugin(where, name, plugins[kind], options)
    raise ConfigError(f"receiver {name!r}: type {kind!r} is unknown; accepted: {accepted}")


def _resolve_env(where: str, options: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    # ``url_env = "VAR"`` keeps the secret out of the file: it becomes ``url = $VAR``.
    resolved = {}
    for key, value in options.items():
        if not key.endswith(_ENV_SUFFIX):
            resolved[key] = value
            continue
        field = key.removesuffix(_ENV_SUFFIX)
        if field in options:
            raise ConfigError(f"{where}: set either {field!r} or {key!r}, not both")
        if not isinstance(value, str) or value not in env:
            raise ConfigError(
                f"{where}: field {key!r} names environment variable {value!r}, which is not set"
            )
        resolved[field] = env[value]
    return resolved


def _build_builtin(where: str, name: str, kind: str, options: dict[str, Any]) -> Notifier:
    cls = BUILTIN_TYPES[kind]
    renamed = _RENAMED.get(kind, {})
    options = {renamed.get(key, key): value for key, value in options.items()}
    if kind == "email" and isinstance(options.get("to"), str):
        options["to"] = [options["to"]]
    url_field = _URL_FIELDS.get(kind)
    url = options.get(url_field) if url_field else None
    if isinstance(url, str) and not url.startswith(("http://", "https://")):
        raise ConfigError(
            f"{where}: field {url_field!r} must be an http:// or https:// URL "
            "(the value is not shown: it may hold a token)"
        )
    if kind == "apprise" and not apprise_installed():
        raise ConfigError(f"{where} needs the apprise package: {INSTALL_HINT}")
    try:
        notifier: Notifier = _adapter(kind).validate_python({**options, "name": name})
    except ValidationError as exc:
        raise ConfigError(_explain(where, exc, cls, renamed)) from None
    return notifier


_ADAPTERS: dict[str, TypeAdapter[Any]] = {}


def _adapter(kind: str) -> TypeAdapter[Any]:
    # Building an adapter compiles a validator; once per type is enough.
    if kind not in _ADAPTERS:
        _ADAPTERS[kind] = TypeAdapter(BUILTIN_TYPES[kind])
    return _ADAPTERS[kind]


def _explain(where: str, exc: ValidationError, cls: type[Any], renamed: Mapping[str, str]) -> str:
    shown = {field: key for key, field in renamed.items()}
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        field = ".".join(str(part) for part in error["loc"]) or "?"
        field = shown.get(field, field)
        if error["type"] == "missing" or error["type"] == "missing_argument":
            problems.append(f"field {field!r} is required")
        elif error["type"] == "unexpected_keyword_argument":
            problems.append(f"field {field!r} is not accepted")
        else:
            problems.append(f"field {field!r}: {error['msg']}")
    accepted = ", ".join(
        shown.get(f.name, f.name) for f in dataclass_fields(cls) if f.name != "name"
    )
    return f"{where}: {'; '.join(problems)}; accepted fields: {accepted}"


def _build_plugin(
    where: str, name: str, factory: NotifierFactory, options: dict[str, Any]
) -> Notifier:
    try:
        notifier = factory(name, options)
    except Exception as exc:
        # Plugins do not say which fields are secret, so hide every string value.
        message = str(exc)
        for value in options.values():
            if isinstance(value, str) and len(value) >= 4:
                message = message.replace(value, "***")
        raise ConfigError(f"{where}: {type(exc).__name__}: {message}") from None
    if not callable(getattr(notifier, "send", None)):
        raise ConfigError(f"{where}: the plugin's factory returned no Notifier (no send method)")
    return notifier


def plugin_factories() -> dict[str, NotifierFactory]:
    """Channel types installed by other packages, by type name; built-in names win."""
    factories: dict[str, NotifierFactory] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in BUILTIN_TYPES:
            logger.warning(
                "ignoring notifier plugin %r (%s): %r is a built-in type",
                entry.name,
                entry.value,
                entry.name,
            )
            continue
        factories[entry.name] = _lazy(entry.name, entry.value)
    return factories


def _lazy(kind: str, target: str) -> NotifierFactory:
    # Load the plugin module only when a receiver uses it, so one broken plugin spoils nothing else.
    def factory(name: str, options: Mapping[str, Any]) -> Notifier:
        for entry in entry_points(group=ENTRY_POINT_GROUP, name=kind):
            loaded: NotifierFactory = entry.load()
            return loaded(name, options)
        raise ConfigError(f"notifier plugin {kind!r} ({target}) is no longer installed")

    return factory
