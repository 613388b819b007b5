"""Settings, read once from the environment at start-up into a frozen dataclass.

A bad value stops the process with a message naming the variable. The admin token never appears
in the `repr` or in logs.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aggregations.keys import DEFAULT_PREFIX, check_prefix
from analytics.loops import CHOICES
from analytics.storage import CLUSTER_SCHEMES, is_cluster_url, parse_cluster_url
from collectors.clients import Network, parse_networks

T = TypeVar("T")


class SettingsError(ValueError):
    """A variable with a value the service cannot use; the message names it."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    redis_url: str | None = field(default=None, repr=False)
    database_url: str | None = field(default=None, repr=False)
    admin_token: str | None = field(default=None, repr=False)
    rollup_interval: float = 60.0
    rollup_enabled: bool = True
    rollup_min_replicas: int = 0
    visit_timeout: float = 1800.0
    online_window: float = 300.0
    trusted_proxies: tuple[Network, ...] = ()
    data_dir: Path = Path("var")
    workers: int = 1
    redis_prefix: str = DEFAULT_PREFIX
    article_dedup: bool = True
    max_articles_per_day: int = 100_000
    rate_limit_per_minute: int = 600
    rate_limit_burst: int = 60
    site_rate_limit_per_minute: int = 0
    site_rate_limit_burst: int = 0
    sites_refresh: float = 30.0
    shutdown_timeout: float = 25.0
    log_format: str = "text"
    log_level: str = "INFO"
    access_log: bool = False
    metrics_dir: Path | None = None
    event_loop: str = "auto"

    @property
    def embedded(self) -> bool:
        """Neither Redis nor PostgreSQL configured: start both from the `embedded` extra."""
        return self.redis_url is None and self.database_url is None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        r = _Reader(env)
        return cls(
            host=r.get("HOST", str, cls.host),
            port=r.get("PORT", _port, cls.port),
            redis_url=r.get("REDIS_URL", _redis_url, None),
            database_url=r.get("DATABASE_URL", _url(("postgres", "postgresql")), None),
            admin_token=r.get("ADMIN_TOKEN", _token, None),
            rollup_interval=r.get("ROLLUP_INTERVAL", _positive(float), cls.rollup_interval),
            rollup_enabled=r.get("ROLLUP", _bool, cls.rollup_enabled),
            rollup_min_replicas=r.get(
                "ROLLUP_MIN_REPLICAS", _non_negative(int), cls.rollup_min_replicas
            ),
            visit_timeout=r.get("VISIT_TIMEOUT", _positive(float), cls.visit_timeout),
            online_window=r.get("ONLINE_WINDOW", _positive(float), cls.online_window),
            trusted_proxies=r.get("TRUSTED_PROXIES", _networks, ()),
            data_dir=r.get("DATA_DIR", Path, cls.data_dir),
            workers=r.get("WORKERS", _positive(int), cls.workers),
            redis_prefix=r.get("REDIS_PREFIX", check_prefix, cls.redis_prefix),
            article_dedup=r.get("ARTICLE_DEDUP", _dedup, cls.article_dedup),
            max_articles_per_day=r.get(
                "MAX_ARTICLES_PER_DAY", _positive(int), cls.max_articles_per_day
            ),
            rate_limit_per_minute=r.get(
                "RATE_LIMIT_PER_MINUTE", _non_negative(int), cls.rate_limit_per_minute
            ),
            rate_limit_burst=r.get("RATE_LIMIT_BURST", _non_negative(int), cls.rate_limit_burst),
            site_rate_limit_per_minute=r.get(
                "SITE_RATE_LIMIT_PER_MINUTE", _non_negative(int), cls.site_rate_limit_per_minute
            ),
            site_rate_limit_burst=r.get(
                "SITE_RATE_LIMIT_BURST", _non_negative(int), cls.site_rate_limit_burst
            ),
            sites_refresh=r.get("SITES_REFRESH", _positive(float), cls.sites_refresh),
            shutdown_timeout=r.get("SHUTDOWN_TIMEOUT", _positive(float), cls.shutdown_timeout),
            log_format=r.get("LOG_FORMAT", _choice("text", "json"), cls.log_format),
            log_level=r.get(
                "LOG_LEVEL", _choice("DEBUG", "INFO", "WARNING", "ERROR", upper=True), "INFO"
            ),
            access_log=r.get("ACCESS_LOG", _bool, cls.access_log),
            metrics_dir=r.get("METRICS_DIR", Path, None),
            event_loop=r.get("EVENT_LOOP", _event_loop, cls.event_loop),
        )


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def get(self, name: str, cast: Callable[[str], T], default: T) -> T:
        var = f"ANALYTICS_{name}"
        raw = self.env.get(var)
        if raw is None or raw.strip() == "":
            return default
        try:
            return cast(raw.strip())
        except (ValueError, TypeError) as err:
            shown = "(hidden)" if name == "ADMIN_TOKEN" else repr(raw)
            raise SettingsError(f"{var}={shown}: {err}") from None


def _port(raw: str) -> int:
    port = int(raw)
    if not 0 <= port <= 65535:
        raise ValueError("must be a port number, 0-65535")
    return port


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def cast(raw: str) -> Any:
        value = kind(raw)
        if not value > 0:
            raise ValueError("must be greater than zero")
        return value

    return cast


def _non_negative(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def cast(raw: str) -> Any:
        value = kind(raw)
        if value < 0:
            raise ValueError("must not be negative")
        return value

    return cast


def _url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    def cast(raw: str) -> str:
        scheme = raw.split("://", 1)[0] if "://" in raw else ""
        if scheme not in schemes:
            raise ValueError(f"must be a URL starting with one of {', '.join(schemes)}")
        return raw

    return cast


def _redis_url(raw: str) -> str:
    """One server (`redis`, `rediss`, `unix`), or a cluster by its seed nodes (see `storage`)."""
    url = _url(("redis", "rediss", "unix", *CLUSTER_SCHEMES))(raw)
    if is_cluster_url(url):
        parse_cluster_url(url)
    return url


def _token(raw: str) -> str:
    if len(raw) < 16:
        raise ValueError("must be at least 16 characters")
    return raw


def _networks(raw: str) -> tuple[Network, ...]:
    return parse_networks(raw.split(","))


def _bool(raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _dedup(raw: str) -> bool:
    value = raw.lower()
    if value in ("visit", "none"):
        return value == "visit"
    raise ValueError("must be 'visit' (once per visit) or 'none' (every load)")


def _event_loop(raw: str) -> str:
    value = _choice(*CHOICES)(raw)
    if value == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ValueError("uvloop is not installed (pip install uvloop)")
    return value


def _choice(*options: str, upper: bool = False) -> Callable[[str], str]:
    def cast(raw: str) -> str:
        value = raw.upper() if upper else raw.lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return cast
