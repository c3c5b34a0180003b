"""Tests of kubechat.api.settings: KUBECHAT_* environment parsing and API keys."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubechat.api.settings import Settings, get_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run every test without KUBECHAT_* variables and leave no cached settings behind."""
    for name in list(os.environ):
        if name.startswith("KUBECHAT_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_defaults_without_environment() -> None:
    """With nothing set, the API runs embedded with the single local principal."""
    settings = Settings()
    assert settings.api_keys is None
    assert settings.principals_by_key() == {}
    assert settings.local_principal == "local"
    assert settings.history_database() == Path(".kubechat") / "history.sqlite3"


def test_env_prefix_sets_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    """KUBECHAT_<FIELD> variables set the matching settings, with type conversion."""
    monkeypatch.setenv("KUBECHAT_TRITON_URL", "triton.kubechat.svc:8001")
    monkeypatch.setenv("KUBECHAT_STATE_DIR", "/var/lib/kubechat")
    monkeypatch.setenv("KUBECHAT_MAX_MESSAGE_CHARS", "2000")
    monkeypatch.setenv("KUBECHAT_CORS_ORIGINS", '["https://chat.example.com"]')
    monkeypatch.setenv("TRITON_URL", "unprefixed-is-ignored:1")
    settings = Settings()
    assert settings.triton_url == "triton.kubechat.svc:8001"
    assert settings.state_dir == Path("/var/lib/kubechat")
    assert settings.history_database() == Path("/var/lib/kubechat/history.sqlite3")
    assert settings.max_message_chars == 2000
    assert settings.cors_origins == ["https://chat.example.com"]


def test_database_url_overrides_the_state_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit KUBECHAT_DATABASE_URL is used as the history database path."""
    monkeypatch.setenv("KUBECHAT_DATABASE_URL", "/data/history.db")
    assert Settings().history_database() == Path("/data/history.db")


def test_out_of_range_value_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    """Field constraints apply to environment values too."""
    monkeypatch.setenv("KUBECHAT_MAX_WS_FRAME_BYTES", "10")
    with pytest.raises(ValueError, match="max_ws_frame_bytes"):
        Settings()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("k1=alice", {"k1": "alice"}),
        ("k1=alice,k2=bob", {"k1": "alice", "k2": "bob"}),
        (" k1 = alice , k2=bob ,", {"k1": "alice", "k2": "bob"}),
        ("k1=alice,,k2=bob", {"k1": "alice", "k2": "bob"}),
    ],
)
def test_api_keys_parse_into_principals(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: dict[str, str]
) -> None:
    """KUBECHAT_API_KEYS maps each key to its principal; blanks and stray commas are ignored."""
    monkeypatch.setenv("KUBECHAT_API_KEYS", value)
    assert Settings().principals_by_key() == expected


@pytest.mark.parametrize("value", ["justakey", "=alice", "key=", "k1=alice,broken", " = "])
def test_malformed_api_keys_raise(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """A pair without a key or a principal is a configuration error, not a silent skip."""
    monkeypatch.setenv("KUBECHAT_API_KEYS", value)
    settings = Settings()
    with pytest.raises(ValueError, match="key=principal"):
        settings.principals_by_key()


def test_api_keys_are_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    """The secret never appears in repr, str or a JSON dump of the settings."""
    monkeypatch.setenv("KUBECHAT_API_KEYS", "s3cr3t-key=alice")
    settings = Settings()
    assert settings.principals_by_key() == {"s3cr3t-key": "alice"}
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert "s3cr3t-key" not in shown


def test_get_settings_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """get_settings reads the environment once; cache_clear makes it read again."""
    monkeypatch.setenv("KUBECHAT_DEFAULT_MODEL", "smollm2")
    first = get_settings()
    monkeypatch.setenv("KUBECHAT_DEFAULT_MODEL", "synthetic")
    assert get_settings() is first
    assert first.default_model == "smollm2"
    get_settings.cache_clear()
    assert get_settings().default_model == "synthetic"


@pytest.mark.parametrize("value", ["", " , ", ","])
def test_set_but_empty_api_keys_do_not_disable_authentication(value: str) -> None:
    """An empty Secret must fail loudly rather than open every session to everyone."""
    with pytest.raises(ValueError, match="names no key"):
        Settings(api_keys=value).principals_by_key()


def test_a_key_given_twice_is_rejected() -> None:
    """A copy-paste slip must not hand one principal's key to another."""
    with pytest.raises(ValueError, match="same key twice"):
        Settings(api_keys="k=alice,k=bob").principals_by_key()


def test_the_websocket_frame_limit_stays_below_the_transports() -> None:
    """Frames between the two limits get an error event and the socket stays open; past the
    transport's, the server closes with 1009. Every way of starting the API keeps uvicorn's
    default, which WS_TRANSPORT_MAX_BYTES names (tests/chart checks the chart's and the image's
    commands leave it alone)."""
    import uvicorn

    from kubechat.api.settings import WS_TRANSPORT_MAX_BYTES

    assert uvicorn.Config(app="kubechat.api.app:create_app").ws_max_size == WS_TRANSPORT_MAX_BYTES
    assert Settings().max_ws_frame_bytes < WS_TRANSPORT_MAX_BYTES
    with pytest.raises(ValueError, match="max_ws_frame_bytes"):
        Settings(max_ws_frame_bytes=WS_TRANSPORT_MAX_BYTES)
