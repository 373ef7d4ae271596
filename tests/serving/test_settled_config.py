"""The booted worker's view of gunicorn's Config (gpool._serving.workers._SettledConfig)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

pytest.importorskip("gunicorn")

from gunicorn.config import Config  # type: ignore[import-untyped]

from gpool._serving.workers import _SettledConfig


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Names looked up through Config.__getattr__ from now on."""
    seen: Counter[str] = Counter()
    real = Config.__getattr__

    def counting(self: Any, name: str) -> Any:
        seen[name] += 1
        return real(self, name)

    monkeypatch.setattr(Config, "__getattr__", counting)
    return seen


def test_each_setting_is_looked_up_once(lookups: Counter[str]) -> None:
    config = Config()
    config.set("keepalive", 7)
    view = _SettledConfig(config)
    limit = config.limit_request_line
    lookups.clear()
    assert [view.keepalive for _ in range(3)] == [7, 7, 7]
    assert [view.limit_request_line for _ in range(3)] == [limit] * 3
    assert lookups == Counter({"keepalive": 1, "limit_request_line": 1})


def test_properties_built_from_settings_are_kept_too(lookups: Counter[str]) -> None:
    view = _SettledConfig(Config())
    assert not view.is_ssl
    lookups.clear()
    assert not view.is_ssl
    assert not lookups


def test_set_reaches_the_config_and_forgets_what_was_kept() -> None:
    config = Config()
    view = _SettledConfig(config)
    assert view.keepalive == 2 and not view.is_ssl
    view.set("keepalive", 9)
    view.set("certfile", "/some/cert.pem")
    assert config.keepalive == 9
    assert view.keepalive == 9
    assert view.is_ssl  # recomputed from the new certfile


def test_methods_and_unknown_names_are_the_configs() -> None:
    config = Config()
    view = _SettledConfig(config)
    assert view.get_cmd_args_from_env() == config.get_cmd_args_from_env()
    assert view.settings is config.settings
    with pytest.raises(AttributeError, match="No configuration setting for: no_such_setting"):
        view.no_such_setting  # noqa: B018
