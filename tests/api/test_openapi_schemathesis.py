"""The OpenAPI document is true: schemathesis calls every operation with generated input
against real SQLite storage holding the known workload, with an admin token, and checks that
nothing is a 5xx and that every answer (status, content type, headers, body) matches the
document, and that every operation refuses a request without its token.

Positive-data acceptance is not checked: some constraints span parameters (``until`` after
``since``; a ``step`` that gives at most 10,000 points), which OpenAPI cannot state, so a
schema-valid request may rightly be a 422. Instead every 422 must name the parameter.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from queuelens.api import create_app
from queuelens.api.tokens import new_token_entry
from queuelens.storage import open_storage
from tests.api.conftest import make_settings, seed, settings_file

_DIR = Path(tempfile.mkdtemp(prefix="queuelens-openapi-"))
_STORAGE = open_storage(f"sqlite:///{_DIR / 'q.db'}")
seed(_STORAGE)
_TOKEN, _ENTRY = new_token_entry("admin")
_APP = create_app(
    make_settings(
        _DIR,
        api_tokens=[_ENTRY],
        rate_limit_ip_per_min=0,
        rate_limit_token_per_min=0,
        stream_interval="0.01s",
    ),
    storage=_STORAGE,
    toml_path=settings_file(_DIR),
)
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)


@schema.auth()
class AdminToken:
    """Every request carries the admin token, so schemathesis knows the header is auth (it
    still checks that each operation refuses a request without it)."""

    def get(self, case: schemathesis.Case[Any], context: Any) -> str:
        return _TOKEN

    def set(self, case: schemathesis.Case[Any], data: str, context: Any) -> None:
        case.headers["Authorization"] = f"Bearer {data}"


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    _STORAGE.close()
    shutil.rmtree(_DIR, ignore_errors=True)


def a_422_names_the_parameter(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code != 422:
        return None
    body = response.json()
    assert body["message"], "a 422 says what is wrong in one line"
    for issue in body["detail"]:
        location, name = issue["loc"][0], issue["loc"][-1]
        assert location in ("query", "path", "header"), issue
        assert isinstance(name, str), issue
        assert body["message"].count(f"{name}: ") >= 1, body
    return True


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_operation_matches_the_document(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate(
        excluded_checks=[positive_data_acceptance],
        additional_checks=[a_422_names_the_parameter],
    )
