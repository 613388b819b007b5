"""Settings from the environment: defaults that work, and errors that name the variable."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from analytics.settings import Settings, SettingsError


def test_defaults_match_the_design():
    s = Settings.from_env({})
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert s.rollup_interval == 60
    assert s.visit_timeout == 1800
    assert s.online_window == 300
    assert s.trusted_proxies == ()
    assert s.data_dir == Path("var")
    assert s.workers == 1
    assert s.article_dedup is True
    assert s.max_articles_per_day == 100_000
    assert (s.rate_limit_per_minute, s.rate_limit_burst) == (600, 60)
    assert s.embedded


def test_values_are_cast():
    s = Settings.from_env(
        {
            "ANALYTICS_PORT": "9000",
            "ANALYTICS_REDIS_URL": "redis://r:6379/0",
            "ANALYTICS_DATABASE_URL": "postgresql://u@db/analytics",
            "ANALYTICS_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.1,::1",
            "ANALYTICS_ARTICLE_DEDUP": "none",
            "ANALYTICS_ROLLUP_INTERVAL": "2.5",
            "ANALYTICS_LOG_FORMAT": "JSON",
        }
    )
    assert s.port == 9000
    assert not s.embedded
    assert ipaddress.ip_address("10.1.2.3") in s.trusted_proxies[0]
    assert len(s.trusted_proxies) == 3
    assert s.article_dedup is False
    assert s.rollup_interval == 2.5
    assert s.log_format == "json"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ANALYTICS_PORT", "70000"),
        ("ANALYTICS_PORT", "http"),
        ("ANALYTICS_REDIS_URL", "localhost:6379"),
        ("ANALYTICS_DATABASE_URL", "mysql://x"),
        ("ANALYTICS_TRUSTED_PROXIES", "10.0.0.0/8,not-an-ip"),
        ("ANALYTICS_ROLLUP_INTERVAL", "0"),
        ("ANALYTICS_WORKERS", "two"),
        ("ANALYTICS_ARTICLE_DEDUP", "sometimes"),
        ("ANALYTICS_REDIS_PREFIX", "a{b}"),
        ("ANALYTICS_LOG_FORMAT", "xml"),
        ("ANALYTICS_ACCESS_LOG", "maybe"),
    ],
)
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_secrets_stay_out_of_repr_and_errors():
    s = Settings.from_env(
        {
            "ANALYTICS_ADMIN_TOKEN": "s3cret-token-that-is-long",
            "ANALYTICS_DATABASE_URL": "postgresql://user:dbpass@db/analytics",
            "ANALYTICS_REDIS_URL": "redis://:redispass@r:6379/0",
        }
    )
    shown = repr(s)
    for secret in ("s3cret-token-that-is-long", "dbpass", "redispass"):
        assert secret not in shown
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"ANALYTICS_ADMIN_TOKEN": "tooshort"})
    assert "tooshort" not in str(err.value)
