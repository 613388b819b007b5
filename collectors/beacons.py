"""Parsing: a beacon's bytes (or the pixel's query) into a validated `Beacon`, or an error that
names the field at fault."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from urllib.parse import urlsplit

import msgspec

from aggregations.errors import InvalidInput, TooLarge
from aggregations.sites import check_article_id, check_site_id

MAX_BODY = 8 * 1024
MAX_URL = 2000
MAX_TITLE = 300
CACHED_BODY = 1024  # longer bodies (rare: a long title or url) are parsed every time
CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
FIELD_IN_ERROR = re.compile(r"`\$\.(\w+)`|field `(\w+)`")


class Beacon(msgspec.Struct, frozen=True):
    site: str
    url: str
    referrer: str | None = None
    article: str | None = None
    title: str | None = None


_decoder = msgspec.json.Decoder(Beacon)


@lru_cache(maxsize=8192)  # the same pages and referrers come again and again
def is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


def check_url(value: str, field: str, required: bool) -> str | None:
    if not value:
        if required:
            raise InvalidInput(f"{field} must be the page's absolute http(s) address", field)
        return None
    if len(value) > MAX_URL:
        raise InvalidInput(f"{field} must be at most {MAX_URL} characters", field)
    if not is_http_url(value):
        if not required:
            return None  # a referrer we cannot read is not worth refusing the view for
        raise InvalidInput(f"{field} must be the page's absolute http(s) address", field)
    return value


def validate(beacon: Beacon) -> Beacon:
    check_site_id(beacon.site)
    check_url(beacon.url, "url", required=True)
    referrer = check_url(beacon.referrer or "", "referrer", required=False)
    if beacon.article is not None:
        check_article_id(beacon.article)
    title = beacon.title
    if title is not None:
        if len(title) > MAX_TITLE:
            raise InvalidInput(f"title must be at most {MAX_TITLE} characters", "title")
        title = CONTROL.sub(" ", title).strip() or None
    if referrer is beacon.referrer and title is beacon.title:
        return beacon
    return msgspec.structs.replace(beacon, referrer=referrer, title=title)


def decode_error(err: Exception) -> InvalidInput:
    if isinstance(err, UnicodeDecodeError):
        return InvalidInput("the body must be UTF-8")
    message = str(err)
    if isinstance(err, msgspec.ValidationError):
        found = FIELD_IN_ERROR.search(message)
        if found:
            field = found.group(1) or found.group(2)
            if "missing required field" in message:
                return InvalidInput(f"{field} is required", field)
            return InvalidInput(f"{field} must be a string", field)
        return InvalidInput("the body must be a JSON object")
    return InvalidInput("the body must be JSON: " + message.removeprefix("JSON is malformed: "))


def parse_body(body: bytes) -> Beacon:
    """The beacon in `body` (bytes: the cache hashes it), validated. Every view of a page sends
    the same bytes (but for the referrer), so a body seen lately is answered from a cache:
    decoding and validating it again would give the same frozen `Beacon` (~3 us a beacon). The
    cache holds some 3 MiB at a portal's usual body sizes, at most ~20 MiB (4 096 bodies of
    1 KiB with their decoded strings)."""
    if len(body) > CACHED_BODY:
        return _parse_body(body)
    return _parse_cached(body)


@lru_cache(maxsize=4096)  # errors are not cached: a bad body is parsed, and refused, each time
def _parse_cached(body: bytes) -> Beacon:
    return _parse_body(body)


def _parse_body(body: bytes) -> Beacon:
    if len(body) > MAX_BODY:
        raise TooLarge(f"a beacon is at most {MAX_BODY} bytes")
    try:
        beacon = _decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as err:
        raise decode_error(err) from err
    except RecursionError as err:  # an ignored field nested thousands deep: msgspec gives up
        raise InvalidInput("the body nests too deeply to be a beacon") from err
    return validate(beacon)


def parse_query(query: Mapping[str, str]) -> Beacon:
    """The pixel's query string; empty parameters count as absent."""
    fields = {k: query[k] for k in ("site", "url", "referrer", "article", "title") if query.get(k)}
    try:
        beacon = msgspec.convert(fields, Beacon)
    except msgspec.ValidationError as err:
        raise decode_error(err) from err
    return validate(beacon)
