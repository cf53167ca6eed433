"""The OpenAPI document of the proxy (``GET /openapi.json``), built from the routes
themselves so it cannot miss one: each route's path parameters, its handler's
docstring as summary, and the request body schemas below (by handler name)."""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute, Route

from pystream.version import __version__

__all__ = ["openapi_document"]

_V2_PRODUCE_TYPES = (
    "application/vnd.kafka.json.v2+json",
    "application/vnd.kafka.binary.v2+json",
    "application/json",
)
_V2_TYPES = ("application/vnd.kafka.v2+json", "application/json")

_TOPIC_PARTITION = {
    "type": "object",
    "required": ["topic", "partition"],
    "properties": {
        "topic": {"type": "string", "minLength": 1},
        "partition": {"type": "integer", "minimum": 0},
    },
}
_PARTITIONS = {
    "type": "object",
    "required": ["partitions"],
    "properties": {"partitions": {"type": "array", "items": _TOPIC_PARTITION}},
}
_OFFSETS = {
    "type": "object",
    "required": ["offsets"],
    "properties": {
        "offsets": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["topic", "partition", "offset"],
                "properties": {
                    **_TOPIC_PARTITION["properties"],  # type: ignore[dict-item]
                    "offset": {"type": "integer", "minimum": 0},
                    "metadata": {"type": "string"},
                },
            },
        }
    },
}
_V3_DATA = {
    "type": "object",
    "properties": {"type": {"enum": ["JSON", "BINARY", "STRING"]}, "data": {}},
}

# handler name -> (content types, schema); ``optional`` bodies may be empty.
BODIES: dict[str, tuple[tuple[str, ...], dict[str, Any], bool]] = {
    "produce_to_topic": (
        _V2_PRODUCE_TYPES,
        {
            "type": "object",
            "required": ["records"],
            "properties": {
                "records": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "key": {},
                            "value": {},
                            "partition": {"type": "integer", "minimum": 0},
                        },
                    },
                }
            },
        },
        False,
    ),
    "create_instance": (
        _V2_TYPES,
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,249}$"},
                "format": {"enum": ["json", "binary"]},
                "auto.offset.reset": {"enum": ["earliest", "latest", "none"]},
                "auto.commit.enable": {"enum": ["true", "false", True, False]},
                "fetch.min.bytes": {"type": ["integer", "string"]},
                "consumer.request.timeout.ms": {"type": ["integer", "string"]},
            },
        },
        True,
    ),
    "subscribe": (
        _V2_TYPES,
        {
            "type": "object",
            "properties": {
                "topics": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "string", "minLength": 1},
                },
                "topic_pattern": {"type": "string", "minLength": 1},
            },
        },
        False,
    ),
    "assign": (_V2_TYPES, _PARTITIONS, False),
    "committed_offsets": (_V2_TYPES, _PARTITIONS, False),
    "seek_to_beginning": (_V2_TYPES, _PARTITIONS, False),
    "seek_to_end": (_V2_TYPES, _PARTITIONS, False),
    "commit_offsets": (_V2_TYPES, _OFFSETS, True),
    "seek": (_V2_TYPES, _OFFSETS, False),
    "create_topic": (
        ("application/json",),
        {
            "type": "object",
            "required": ["topic_name"],
            "properties": {
                "topic_name": {"type": "string", "minLength": 1},
                "partitions_count": {"type": "integer", "minimum": 1},
                "replication_factor": {"type": "integer", "minimum": 1},
                "configs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "value"],
                        "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
                    },
                },
                "validate_only": {"type": "boolean"},
            },
        },
        False,
    ),
    "produce_records": (
        ("application/json",),
        {
            "type": "object",
            "properties": {
                "partition_id": {"type": "integer", "minimum": 0},
                "headers": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string"},
                            "value": {"type": ["string", "null"], "format": "byte"},
                        },
                    },
                },
                "key": _V3_DATA,
                "value": _V3_DATA,
                "timestamp": {"type": "string", "format": "date-time"},
            },
        },
        False,
    ),
}
BODIES["produce_to_partition"] = BODIES["produce_to_topic"]

_QUERIES = {
    "records": [
        {"name": "timeout", "in": "query", "schema": {"type": "integer", "minimum": 0}},
        {"name": "max_bytes", "in": "query", "schema": {"type": "integer", "minimum": 0}},
    ]
}
_ERROR = {"$ref": "#/components/schemas/Error"}


def openapi_document(routes: list[BaseRoute]) -> dict[str, Any]:
    """OpenAPI 3.1 for every route of the app."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route) or route.methods is None:
            continue
        for method in sorted(route.methods - {"HEAD"}):
            doc = (route.endpoint.__doc__ or route.name).strip().splitlines()[0]
            operation: dict[str, Any] = {
                # v2 and v3 share handler names (list_topics ...): ids must be unique.
                "operationId": ("v3_" if route.path.startswith("/v3/") else "") + route.name,
                "summary": doc,
                "parameters": [
                    {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                    for name in route.param_convertors
                ]
                + _QUERIES.get(route.name, []),
                "responses": {
                    "200": {"description": "the result"},
                    "204": {"description": "done"},
                    "4XX": {
                        "description": "a bad request, in Confluent's error shape",
                        "content": {"application/json": {"schema": _ERROR}},
                    },
                },
            }
            if route.name in BODIES:
                types, schema, optional = BODIES[route.name]
                operation["requestBody"] = {
                    "required": not optional,
                    "content": {t: {"schema": schema} for t in types},
                }
            paths.setdefault(route.path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pystream REST proxy (Confluent REST Proxy API v2 and v3)",
            "version": __version__,
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error_code", "message"],
                    "properties": {
                        "error_code": {"type": "integer"},
                        "message": {"type": "string"},
                    },
                }
            }
        },
    }
