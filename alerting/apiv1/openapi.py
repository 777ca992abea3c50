"""The OpenAPI 3.1 document of ``/api/v1``, generated from the operations' pydantic models.

    doc = build_document(OPERATIONS)        # served at GET /api/v1/openapi.json

Nothing is written by hand but the words: parameters come from the query and path models, bodies and
answers from the request and response models (``components.schemas``), errors are one schema
(:class:`~alerting.apiv1.models.ErrorBody`), and the warning-signal push is an OpenAPI ``webhook``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from alerting.apiv1.models import ErrorBody, WarningSignal

__all__ = ["PREFIX", "Operation", "build_document"]

PREFIX = "/api/v1"
_REF = "#/components/schemas/{model}"
_STATUS_TEXT = {
    400: "The request is not valid (the detail says what to send)",
    401: "No valid bearer token",
    403: "The token's roles do not allow this",
    404: "No such resource",
    409: "Not possible now",
    413: "The body is too large",
    415: "The body is not JSON",
    429: "Too many requests from this client: wait Retry-After seconds",
    503: "A service this answer needs (identity provider keys, InfluxDB) is unavailable",
}


@dataclass(frozen=True, slots=True)
class Operation:
    """One route of the API: what it takes, what it answers and who may call it."""

    method: str
    path: str  # below PREFIX, e.g. "/readings"
    operation_id: str
    summary: str
    tag: str
    permission: str
    response: type[BaseModel] | None  # None: a free-form object (the document itself)
    query: type[BaseModel] | None = None
    path_params: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    description: str = ""

    @property
    def full_path(self) -> str:
        return PREFIX + self.path


def _plain(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema without the ``null`` pydantic adds for an optional field (a parameter that
    is not null is simply left out)."""
    schema = {k: v for k, v in schema.items() if k not in ("default", "title")} | (
        {"default": schema["default"]} if schema.get("default") is not None else {})
    options = schema.pop("anyOf", None)
    if options is not None:
        kept = [o for o in options if o.get("type") != "null"]
        if len(kept) == 1:
            schema = {**kept[0], **schema}
        else:
            schema["anyOf"] = kept
    return schema


def _parameters(model: type[BaseModel], where: str) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=_REF)
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema.get("properties", {}).items():
        prop = _plain(prop)
        description = prop.pop("description", "")
        out.append({"name": name, "in": where, "required": where == "path" or name in required,
                    "schema": prop, **({"description": description} if description else {})})
    return out


def _json(ref: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": ref}}


def build_document(operations: Iterable[Operation], *, version: str = "1.0.0") -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``operations`` (plus the warning-signal webhook)."""
    operations = list(operations)
    models: list[tuple[type[BaseModel], Any]] = [(ErrorBody, "serialization"), (WarningSignal, "serialization")]
    for op in operations:
        if op.response is not None:
            models.append((op.response, "serialization"))
        if op.body is not None:
            models.append((op.body, "validation"))
    refs, top = models_json_schema(list(dict.fromkeys(models)), ref_template=_REF)
    error_ref = refs[(ErrorBody, "serialization")]
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        params: list[dict[str, Any]] = []
        if op.path_params is not None:
            params += _parameters(op.path_params, "path")
        if op.query is not None:
            params += _parameters(op.query, "query")
        ok = ({"type": "object"} if op.response is None else refs[(op.response, "serialization")])
        responses: dict[str, Any] = {"200": {"description": "OK", "content": _json(ok)}}
        statuses = {401, 403, 429, 503, *op.errors}
        if params or op.body is not None:
            statuses.add(400)
        if op.body is not None:
            statuses |= {413, 415}
        for status in sorted(statuses):
            entry: dict[str, Any] = {"description": _STATUS_TEXT[status], "content": _json(error_ref)}
            if status == 429:
                entry["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
            responses[str(status)] = entry
        operation: dict[str, Any] = {
            "operationId": op.operation_id, "summary": op.summary, "tags": [op.tag],
            "description": (op.description + "\n\n" if op.description else "") + f"Needs the permission `{op.permission}`"
            + (" (a regulator reads without personal data)." if op.permission == "read" else "."),
            "parameters": params, "responses": responses}
        if op.body is not None:
            operation["requestBody"] = {"required": True, "content": _json(refs[(op.body, "validation")])}
        paths.setdefault(op.full_path, {})[op.method.lower()] = operation
    signal = refs[(WarningSignal, "serialization")]
    headers = [{"name": name, "in": "header", "required": True, "schema": {"type": "string", "maxLength": 100},
                "description": text} for name, text in (
        ("X-Cascade-Timestamp", "Unix seconds when this attempt was signed; refuse old ones"),
        ("X-Cascade-Signature", "sha256=<hex HMAC-SHA256 with your secret over '<timestamp>.<body>'>"),
        ("X-Cascade-Delivery", "the delivery id, the same on every retry"))]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Cascade third-party API", "version": version,
                 "description": "Readings, warning signals, thresholds and rules, analysis data and logs of the "
                                "Cascade battery safety early-warning stack (docs/api.md)."},
        "security": [{"bearer": []}],
        "paths": paths,
        "webhooks": {"warningSignal": {"post": {
            "summary": "A warning signal (alert level change) pushed to a subscriber", "parameters": headers,
            "requestBody": {"required": True, "content": _json(signal)},
            "responses": {"2XX": {"description": "Received; anything else is retried (5xx, 408, 429, no answer) "
                                                 "or given up"}}}}},
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                           "description": "An access token from the configured OpenID Connect "
                                                          "provider, with a Cascade role (docs/security.md)"}},
        },
    }
