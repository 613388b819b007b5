"""The API's description, served at `GET /api/v1/openapi.json` (OpenAPI 3.1).

Written by hand from DESIGN.md's contract and kept true by `tests/test_openapi.py` (every route is
described, every described path is routed, real answers validate against these schemas) and by
the fuzz test, which drives the running app from this document and checks every answer against
it. Identifiers and limits come from the modules that enforce them, so the two cannot drift.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from aggregations.reads import PERIODS, TOP_PERIODS
from analytics import api
from analytics.admin import MAX_COUNT
from analytics.responses import Cacheable
from collectors.beacons import MAX_BODY, MAX_TITLE, MAX_URL

Schema = dict[str, Any]

SITE_PATTERN = "^[a-z0-9][a-z0-9_-]{0,63}$"
ARTICLE_PATTERN = "^[A-Za-z0-9._:-]{1,128}$"
SITE = "/api/v1/sites/{site}"


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Schema], required: tuple[str, ...] | None = None) -> Schema:
    """A JSON object with exactly these properties (all required unless listed)."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties if required is None else required),
        "additionalProperties": False,
    }


COUNT: Schema = {"type": "integer", "minimum": 0}
SITE_ID: Schema = {"type": "string", "pattern": SITE_PATTERN}
ARTICLE_ID: Schema = {"type": "string", "pattern": ARTICLE_PATTERN}
SITE_HOSTS: Schema = {"type": "array", "items": {"type": "string"}, "maxItems": 100}

SCHEMAS: dict[str, Schema] = {
    "Error": obj(
        {
            "error": {"type": "string", "description": "machine-readable code"},
            "detail": {"type": "string", "description": "a sentence for a person"},
            "field": {"type": "string", "description": "the input field at fault"},
        },
        ("error", "detail"),
    ),
    "Beacon": {
        **obj(
            {
                "site": SITE_ID,
                "url": {"type": "string", "maxLength": MAX_URL, "format": "uri"},
                "referrer": {"type": ["string", "null"], "maxLength": MAX_URL},
                "article": {**ARTICLE_ID, "type": ["string", "null"]},
                "title": {"type": ["string", "null"], "maxLength": MAX_TITLE},
            },
            ("site", "url"),
        ),
        "additionalProperties": True,  # unknown fields are ignored, for older trackers
        "description": f"A page view; the whole body at most {MAX_BODY} bytes. The url (and the "
        "Origin header, or the pixel's Referer) must be on one of the site's domains.",
    },
    "Period": obj({"pageviews": COUNT, "visits": COUNT, "visitors": COUNT}),
    "Counters": obj(
        {
            "site": SITE_ID,
            "timezone": {"type": "string"},
            "as_of": {"type": "string", "format": "date-time"},
            "online": COUNT,
            **{period: ref("Period") for period in PERIODS},
        }
    ),
    "CollectCounters": {
        **obj(
            {
                "site": SITE_ID,
                "timezone": {"type": "string"},
                "as_of": {"type": "string", "format": "date-time"},
                "online": COUNT,
                **{period: ref("Period") for period in PERIODS},
                "article": ref("ArticleViews"),
            },
            ("site", "timezone", "as_of", "online", *PERIODS),
        ),
        "description": "The site's counters, and the article's views when the beacon named one.",
    },
    "ArticleViews": obj({"article": ARTICLE_ID, "views": COUNT, "today": COUNT}),
    "Articles": obj({"articles": {"type": "array", "items": ref("ArticleViews")}}),
    "Top": obj(
        {
            "period": {"enum": list(TOP_PERIODS)},
            "articles": {
                "type": "array",
                "items": obj(
                    {
                        "article": ARTICLE_ID,
                        "title": {"type": ["string", "null"]},
                        "views": COUNT,
                    }
                ),
            },
        }
    ),
    "Daily": obj(
        {
            "site": SITE_ID,
            "days": {
                "type": "array",
                "items": obj(
                    {
                        "date": {"type": "string", "format": "date"},
                        "pageviews": COUNT,
                        "visits": COUNT,
                        "visitors": COUNT,
                    }
                ),
            },
        }
    ),
    "Site": obj(
        {
            "site": SITE_ID,
            "name": {"type": "string"},
            "domains": SITE_HOSTS,
            "timezone": {"type": "string"},
            "respect_dnt": {"type": "boolean"},
        }
    ),
    "SiteInput": {
        **obj(
            {
                "name": {"type": ["string", "null"], "maxLength": 200},
                "domains": SITE_HOSTS,
                "timezone": {"type": ["string", "null"], "examples": ["Asia/Ho_Chi_Minh"]},
                "respect_dnt": {"type": "boolean"},
            },
            (),
        ),
        "additionalProperties": True,
    },
    "Sites": obj({"sites": {"type": "array", "items": ref("Site")}}),
    "BaselineInput": {
        **obj(
            {
                "total": {
                    **obj(
                        {
                            "pageviews": {**COUNT, "maximum": MAX_COUNT},
                            "visits": {**COUNT, "maximum": MAX_COUNT},
                        },
                        (),
                    ),
                    "additionalProperties": True,
                },
                "articles": {
                    "type": "object",
                    "propertyNames": {"pattern": ARTICLE_PATTERN},
                    "additionalProperties": {**COUNT, "maximum": MAX_COUNT},
                },
                "source": {"type": "string", "maxLength": 200},
            },
            (),
        ),
        "additionalProperties": True,
        "description": "Counts carried over from an older counter; replaces the previous one.",
    },
    "Baseline": obj(
        {
            "site": SITE_ID,
            "total": {
                "oneOf": [
                    {"type": "null"},
                    obj(
                        {
                            "pageviews": COUNT,
                            "visits": COUNT,
                            "source": {"type": "string"},
                            "imported_at": {"type": "string", "format": "date-time"},
                        }
                    ),
                ]
            },
            "articles": obj(
                {
                    "count": COUNT,
                    "views": COUNT,
                    "imported_at": {"type": ["string", "null"], "format": "date-time"},
                }
            ),
        }
    ),
    "Ready": obj(
        {
            "status": {"enum": ["ready", "degraded", "unready"]},
            "redis": {"enum": ["ok", "down"]},
            "postgres": {"enum": ["ok", "down"]},
        }
    ),
    "Health": obj({"status": {"const": "ok"}}),
    "Index": obj(
        {
            "service": {"type": "string"},
            "tracker": {"type": "string"},
            "api": {"type": "string"},
            "health": {"type": "string"},
        }
    ),
}

ERRORS = {
    "400": "malformed input; `field` names the culprit",
    "401": "no valid `Authorization: Bearer` token",
    "403": "refused: origin or url not on the site's domains, or the admin API is off",
    "404": "no such site or resource",
    "413": "the body is too large",
    "429": "rate limited (per client network, or per site)",
    "503": "storage unavailable",
}


def json_content(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def answer(description: str, schema: Schema) -> dict[str, Any]:
    return {"description": description, "content": json_content(schema)}


def errors(*codes: str) -> dict[str, Any]:
    return {code: answer(ERRORS[code], ref("Error")) for code in codes}


def body_of(media: str, schema: Schema | None = None) -> dict[str, Any]:
    return {"description": "the document", "content": {media: {"schema": schema or {}}}}


NOT_MODIFIED = {"304": {"description": "unchanged since the `If-None-Match` ETag"}}
PIXEL_ERROR = {
    "X-Analytics-Error": {
        "description": "why the beacon was refused (an error code); absent when counted",
        "schema": {"type": "string"},
    }
}


def or_empty(schema: Schema) -> Schema:
    """A query parameter that may also be given empty, meaning its default."""
    return {"anyOf": [schema, {"const": ""}]}


def path_param(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": description,
    }


def query_param(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


SITE_PARAM = path_param("site", {"type": "string"}, f"site id, {SITE_PATTERN}")
ARTICLE_PARAM = path_param("article", {"type": "string"}, f"article id, {ARTICLE_PATTERN}")
LANG_PARAM = query_param("lang", or_empty({"enum": ["vi", "en"]}), "language of the labels (vi)")
ADMIN: list[dict[str, list[str]]] = [{"bearer": []}]


def read(summary: str, schema: str, *params: dict[str, Any]) -> dict[str, Any]:
    """A public read: cacheable JSON with an ETag."""
    return {
        "get": {
            "summary": summary,
            "tags": ["reads"],
            "parameters": [SITE_PARAM, *params],
            "responses": {
                "200": answer("the numbers (public, cacheable for 2 s)", ref(schema)),
                **NOT_MODIFIED,
                **errors("400", "404", "503"),
            },
        }
    }


def beacon_paths() -> dict[str, Any]:
    pixel_status = "the GIF; refusals (4xx/5xx, the reason in X-Analytics-Error) answer it too"
    return {
        "/t.js": {
            "get": {
                "summary": "the tracker script",
                "tags": ["beacons"],
                "responses": {
                    "200": body_of("application/javascript", {"type": "string"}),
                    **NOT_MODIFIED,
                },
            }
        },
        "/collect": {
            "post": {
                "summary": "count a page view",
                "description": "Bots, prefetches and (where the site asks) Do Not Track are "
                "answered 204 and count nothing. `?counters=1` also answers the site's counters.",
                "tags": ["beacons"],
                "parameters": [
                    query_param(
                        "counters",
                        {"type": "string", "examples": ["1"]},
                        "1: answer the counters (200); any other value is ignored",
                    )
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": ref("Beacon")},
                        "text/plain": {
                            "schema": {"type": "string", "maxLength": MAX_BODY},
                            "description": "the same JSON, as navigator.sendBeacon sends it",
                        },
                    },
                },
                "responses": {
                    "200": answer(
                        "counted (or dropped by policy); the counters", ref("CollectCounters")
                    ),
                    "204": {"description": "counted, or dropped by policy (bot, prefetch, DNT)"},
                    **errors("400", "403", "404", "413", "429", "503"),
                },
            }
        },
        "/collect.gif": {
            "get": {
                "summary": "count a page view without JavaScript (a 1x1 GIF)",
                "tags": ["beacons"],
                "parameters": [
                    query_param("site", {"type": "string"}, "site id"),
                    query_param("url", {"type": "string"}, "the page's address"),
                    query_param("referrer", {"type": "string"}, "the referring page"),
                    query_param("article", {"type": "string"}, "article id"),
                    query_param("title", {"type": "string"}, "the page's title"),
                ],
                "responses": {
                    code: {
                        "description": pixel_status,
                        "headers": PIXEL_ERROR,
                        "content": {"image/gif": {"schema": {}}},
                    }
                    for code in ("200", "400", "403", "404", "429", "503")
                },
            }
        },
    }


def read_paths() -> dict[str, Any]:
    limit = or_empty({"type": "integer", "minimum": 1, "maximum": api.MAX_LIMIT, "default": 10})
    day = or_empty({"type": "string", "format": "date"})
    return {
        SITE + "/counters": read("online now and every period's counts", "Counters"),
        SITE + "/articles/{article}": read("one article's views", "ArticleViews", ARTICLE_PARAM),
        SITE + "/articles": read(
            "several articles' views",
            "Articles",
            {
                **query_param("ids", {"type": "string"}, f"1-{api.MAX_IDS} ids, comma-separated"),
                "required": True,
            },
        ),
        SITE + "/top": read(
            "the most viewed articles",
            "Top",
            query_param("period", {"enum": list(TOP_PERIODS), "default": "today"}, "period"),
            query_param("limit", limit, "how many"),
        ),
        SITE + "/daily": read(
            f"every day of a range (at most {api.MAX_DAYS} days), zero-filled",
            "Daily",
            query_param("from", day, "first day (to - 29)"),
            query_param("to", day, "last day (today)"),
        ),
    }


def widget_paths() -> dict[str, Any]:
    return {
        "/widget.js": {
            "get": {
                "summary": "the embeddable statistics box (script)",
                "tags": ["widget"],
                "responses": {
                    "200": body_of("application/javascript", {"type": "string"}),
                    **NOT_MODIFIED,
                },
            }
        },
        "/widget/{site}": {
            "get": {
                "summary": "the statistics box as a page, for an iframe",
                "tags": ["widget"],
                "parameters": [SITE_PARAM, LANG_PARAM],
                "responses": {
                    "200": body_of("text/html", {"type": "string"}),
                    **NOT_MODIFIED,
                    **errors("400", "404", "503"),
                },
            }
        },
        "/badge/{site}/{article}.svg": {
            "get": {
                "summary": "an article's views as an SVG badge",
                "tags": ["widget"],
                "parameters": [SITE_PARAM, ARTICLE_PARAM, LANG_PARAM],
                "responses": {
                    "200": body_of("image/svg+xml", {"type": "string"}),
                    **NOT_MODIFIED,
                    **errors("400", "404", "503"),
                },
            }
        },
    }


def admin_paths() -> dict[str, Any]:
    return {
        "/api/v1/sites": {
            "get": {
                "summary": "the sites",
                "tags": ["admin"],
                "security": ADMIN,
                "responses": {
                    "200": answer("every site", ref("Sites")),
                    **errors("401", "403", "503"),
                },
            }
        },
        SITE: {
            "put": {
                "summary": "create or update a site",
                "tags": ["admin"],
                "security": ADMIN,
                "parameters": [SITE_PARAM],
                "requestBody": {"required": True, "content": json_content(ref("SiteInput"))},
                "responses": {
                    "200": answer("updated", ref("Site")),
                    "201": answer("created", ref("Site")),
                    **errors("400", "401", "403", "404", "413", "503"),
                },
            }
        },
        SITE + "/baseline": {
            "post": {
                "summary": "set the counts carried over from an older counter",
                "tags": ["admin"],
                "security": ADMIN,
                "parameters": [SITE_PARAM],
                "requestBody": {"required": True, "content": json_content(ref("BaselineInput"))},
                "responses": {
                    "200": answer("the baseline as stored", ref("Baseline")),
                    **errors("400", "401", "403", "404", "413", "503"),
                },
            }
        },
    }


def operation_paths() -> dict[str, Any]:
    def plain(summary: str, media: str, schema: Schema | None = None) -> dict[str, Any]:
        return {
            "get": {
                "summary": summary,
                "tags": ["operations"],
                "responses": {"200": body_of(media, schema)},
            }
        }

    return {
        "/": {
            "get": {
                "summary": "where things are (the demo page in the embedded default)",
                "tags": ["operations"],
                "responses": {
                    "200": {
                        "description": "an index, or the demo page",
                        "content": {
                            **json_content(ref("Index")),
                            "text/html": {"schema": {"type": "string"}},
                        },
                    }
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "liveness",
                "tags": ["operations"],
                "responses": {"200": answer("the process serves", ref("Health"))},
            }
        },
        "/readyz": {
            "get": {
                "summary": "readiness: 503 only when Redis is down",
                "tags": ["operations"],
                "responses": {
                    "200": answer("ready, or degraded (PostgreSQL down)", ref("Ready")),
                    "503": answer("unready: Redis is down", ref("Ready")),
                },
            }
        },
        "/metrics": plain("Prometheus text exposition", "text/plain", {"type": "string"}),
        "/api/v1/openapi.json": plain("this document", "application/json", {"type": "object"}),
    }


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Visitor analytics",
            "version": "1",
            "description": "Page-view beacons in; live counters, article views and history out. "
            "Errors are JSON: {error, detail, field?}.",
        },
        "paths": {
            **beacon_paths(),
            **read_paths(),
            **widget_paths(),
            **admin_paths(),
            **operation_paths(),
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "ANALYTICS_ADMIN_TOKEN, only ever in the Authorization header",
                }
            },
        },
    }


class OpenApiView:
    """Serves the document, encoded (and its ETag made) once."""

    def __init__(self) -> None:
        self.answer = Cacheable(msgspec.json.encode(document()), "application/json", max_age=3600)

    async def get(self, request: web.Request) -> web.Response:
        return self.answer.response(request)
