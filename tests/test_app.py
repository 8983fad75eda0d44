"""The demo app (app.py): ``HYBRID_*`` settings and ``REDIS_URL`` from the environment."""

from __future__ import annotations

from typing import Any

import pytest

import app as demo

from .conftest import base_config


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param("1073741824", 1073741824, id="int"),
        pytest.param("-5", -5, id="negative-int"),
        pytest.param("0.25", 0.25, id="float"),
        pytest.param("true", True, id="true"),
        pytest.param("FALSE", False, id="false-any-case"),
        pytest.param("S,J", "S,J", id="string"),
        pytest.param("10 per minute", "10 per minute", id="limit-string"),
        pytest.param("", "", id="empty"),
        pytest.param("1e3", "1e3", id="not-a-plain-number"),
    ],
)
def test_env_values(text: str, value: object) -> None:
    parsed = demo.env_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_demo_takes_hybrid_settings_from_the_environment(
    vector_keys: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYBRID_MAX_BODY", "1073741824")
    monkeypatch.setenv("HYBRID_BIND_IP", "false")
    monkeypatch.setenv("HYBRID_FORMATS", "S,J")
    monkeypatch.setenv("HYBRID_STORE_TIMEOUT", "0.25")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("HYBRID_STORE_URL", "memory://")  # the specific setting wins
    config = base_config(vector_keys)
    del config["HYBRID_STORE_URL"]
    config["HYBRID_KEY_POOL_SIZE"] = 0
    flask_app = demo.create_app(config)
    settings = flask_app.extensions["hybrid"].settings
    assert flask_app.config["HYBRID_MAX_BODY"] == 1073741824 == settings.max_body
    assert settings.bind_ip is False
    assert settings.formats == frozenset({"S", "J"})
    assert flask_app.config["HYBRID_STORE_TIMEOUT"] == 0.25
    assert flask_app.config["HYBRID_STORE_URL"] == "memory://"
    # The config argument (tests) wins over the environment.
    assert demo.create_app({**config, "HYBRID_MAX_BODY": 4096}).config["HYBRID_MAX_BODY"] == 4096


def test_redis_url_names_the_store() -> None:
    assert demo.config_from_env({"REDIS_URL": "redis+cluster://h:1", "OTHER": "1"}) == {
        "HYBRID_STORE_URL": "redis+cluster://h:1"
    }
