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
        "partition": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
    },
}
_PARTITIONS = {
    "type": "object",
    "required": ["partitions"],
    "properties": {"partitions": {"type": "array", "items": _TOPIC_PARTITION}},
}


def _offsets_of(item: dict[str, Any]) -> dict[str, Any]:
    """``{"offsets": [item, ...]}``: the body of commits and seeks, produce's answer."""
    return {
        "type": "object",
        "required": ["offsets"],
        "properties": {"offsets": {"type": "array", "items": item}},
    }


_OFFSETS = _offsets_of(
    {
        "type": "object",
        "required": ["topic", "partition", "offset"],
        "properties": {
            **_TOPIC_PARTITION["properties"],  # type: ignore[dict-item]
            "offset": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
            "metadata": {"type": "string"},
        },
    }
)
_V3_DATA = {
    "type": "object",
    "properties": {"type": {"enum": ["JSON", "BINARY", "STRING"]}, "data": {}},
}


def _v2_records(embedded: dict[str, Any]) -> dict[str, Any]:
    """A v2 produce body whose keys and values are ``embedded``."""
    return {
        "type": "object",
        "required": ["records"],
        "properties": {
            "records": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "key": embedded,
                        "value": embedded,
                        "partition": {"type": "integer", "minimum": 0},
                    },
                },
            }
        },
    }


# v2 produce: JSON values are any JSON; binary ones base64 strings (or null).
_V2_JSON_RECORDS = _v2_records({})
_V2_PRODUCE_SCHEMAS = {
    "application/vnd.kafka.json.v2+json": _V2_JSON_RECORDS,
    "application/vnd.kafka.binary.v2+json": _v2_records(
        {"type": ["string", "null"], "format": "byte", "contentEncoding": "base64"}
    ),
    "application/json": _V2_JSON_RECORDS,
}
assert tuple(_V2_PRODUCE_SCHEMAS) == _V2_PRODUCE_TYPES

# handler name -> (content types, schema); ``optional`` bodies may be empty.  The
# v2 produce handlers' schema differs per content type (_V2_PRODUCE_SCHEMAS).
BODIES: dict[str, tuple[tuple[str, ...], dict[str, Any], bool]] = {
    "produce_to_topic": (_V2_PRODUCE_TYPES, _V2_JSON_RECORDS, False),
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

# operation id -> the schema of its 200 answer, where a client relies on the shape.
_V2_PRODUCE_RESULT = _offsets_of(
    {
        "type": "object",
        "required": ["partition", "offset", "error_code", "error"],
        "properties": {
            "partition": {"type": ["integer", "null"]},
            "offset": {"type": ["integer", "null"]},
            "error_code": {"type": ["integer", "null"]},
            "error": {"type": ["string", "null"]},
        },
    }
)
_V2_PRODUCE_RESULT["properties"].update(
    key_schema_id={"type": ["integer", "null"]}, value_schema_id={"type": ["integer", "null"]}
)
RESULTS: dict[str, dict[str, Any]] = {
    "list_topics": {"type": "array", "items": {"type": "string"}},
    "produce_to_topic": _V2_PRODUCE_RESULT,
    "produce_to_partition": _V2_PRODUCE_RESULT,
    "create_instance": {
        "type": "object",
        "required": ["instance_id", "base_uri"],
        "properties": {"instance_id": {"type": "string"}, "base_uri": {"type": "string"}},
    },
}

_QUERIES = {
    "records": [
        {"name": "timeout", "in": "query", "schema": {"type": "integer", "minimum": 0}},
        {"name": "max_bytes", "in": "query", "schema": {"type": "integer", "minimum": 0}},
    ]
}
_ERROR = {"$ref": "#/components/schemas/Error"}
# Errors come as JSON, under v2's media type on v2 routes.
_ERROR_TYPES = ("application/json", "application/vnd.kafka.v2+json")
# Path parameters: names of topics, groups, instances, clusters; partitions are numbers.
_NAME = {"type": "string", "minLength": 1}
_PATH_PARAMETERS = {"partition": {"type": "integer", "minimum": 0}}


def openapi_document(routes: list[BaseRoute]) -> dict[str, Any]:
    """OpenAPI 3.1 for every route of the app."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route) or route.methods is None:
            continue
        for method in sorted(route.methods - {"HEAD"}):
            doc = (route.endpoint.__doc__ or route.name).strip().splitlines()[0]
            # v2 and v3 share handler names (list_topics ...): ids must be unique.
            operation_id = ("v3_" if route.path.startswith("/v3/") else "") + route.name
            ok: dict[str, Any] = {"description": "the result"}
            if operation_id in RESULTS:
                ok["content"] = {_V2_TYPES[0]: {"schema": RESULTS[operation_id]}}
            operation: dict[str, Any] = {
                "operationId": operation_id,
                "summary": doc,
                "parameters": [
                    {
                        "name": name,
                        "in": "path",
                        "required": True,
                        "schema": _PATH_PARAMETERS.get(name, _NAME),
                    }
                    for name in route.param_convertors
                ]
                + _QUERIES.get(route.name, []),
                "responses": {
                    "200": ok,
                    "201": {"description": "created"},
                    "204": {"description": "done"},
                    "4XX": {
                        "description": "a bad request, in Confluent's error shape",
                        "content": {t: {"schema": _ERROR} for t in _ERROR_TYPES},
                    },
                    "5XX": {
                        "description": "Kafka could not answer, in Confluent's error shape",
                        "content": {t: {"schema": _ERROR} for t in _ERROR_TYPES},
                    },
                },
            }
            if route.name in BODIES:
                types, schema, optional = BODIES[route.name]
                schemas = _V2_PRODUCE_SCHEMAS if types is _V2_PRODUCE_TYPES else {}
                operation["requestBody"] = {
                    "required": not optional,
                    "content": {t: {"schema": schemas.get(t, schema)} for t in types},
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
