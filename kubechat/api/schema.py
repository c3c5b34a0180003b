"""The API's schemas as JSON, for the chat page's generated TypeScript types (web/src/api/).

`python -m kubechat.api.schema` prints one JSON object:

* `openapi`: the OpenAPI document the API serves at /openapi.json;
* `socket`: an OpenAPI document whose only content is `components.schemas`: the WebSocket
  protocol's client messages (`ClientMessage`) and server events (`ServerEvent`) of
  kubechat.api.events, so one generator (openapi-typescript) turns both into types.

web/scripts/gen-types.mjs runs this and writes the types; tests/web/test_types.py fails when
the committed ones drift from the models.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import JsonSchemaMode

from kubechat import __version__
from kubechat.api.app import create_app
from kubechat.api.events import ClientMessage, ServerEvent
from kubechat.api.settings import Settings

REF_TEMPLATE = "#/components/schemas/{model}"


def openapi_document() -> dict[str, Any]:
    # Default settings: the schema does not depend on the environment this runs in.
    return create_app(Settings(api_keys=None)).openapi()


def socket_document() -> dict[str, Any]:
    # What a client may send (fields with defaults are optional), and what the server sends.
    unions: list[tuple[str, TypeAdapter[Any], JsonSchemaMode]] = [
        ("ClientMessage", TypeAdapter(ClientMessage), "validation"),
        ("ServerEvent", TypeAdapter(ServerEvent), "serialization"),
    ]
    schemas: dict[str, Any] = {}
    for name, adapter, mode in unions:
        schema = adapter.json_schema(ref_template=REF_TEMPLATE, mode=mode)
        definitions = schema.pop("$defs", {})
        if mode == "serialization":
            definitions = {model: _every_field_sent(d) for model, d in definitions.items()}
        for model, definition in definitions.items():
            if schemas.setdefault(model, definition) != definition:
                raise ValueError(f"{model} differs between the client and server schemas")
        schemas[name] = schema
    return {
        "openapi": "3.1.0",
        "info": {"title": "kubechat WebSocket protocol (/ws/chat/{session_id})", "version": __version__},
        "paths": {},
        "components": {"schemas": dict(sorted(schemas.items()))},
    }


def _every_field_sent(definition: dict[str, Any]) -> dict[str, Any]:
    """The server sends every field of an event, defaults included (`type` above all, which the
    client's union narrows on), so none is optional in what the page receives."""
    if "properties" in definition:
        definition = {**definition, "required": list(definition["properties"])}
    return definition


def main() -> None:
    json.dump({"openapi": openapi_document(), "socket": socket_document()}, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
