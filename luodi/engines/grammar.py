"""Constrained decoding: turn SamplingParams (json_object / json_schema / raw GBNF) into one GBNF grammar."""

from __future__ import annotations

import json

from luodi.engines.base import SamplingParams
from luodi.errors import BadRequest

# One JSON object, bounded whitespace (a small model otherwise can emit newlines forever).
JSON_OBJECT_GBNF = r"""
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null")
object ::= "{" ws ( string ":" ws value ( "," ws string ":" ws value )* )? "}"
array  ::= "[" ws ( value ( "," ws value )* )? "]"
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
ws     ::= | " " | "\n" [ \t]{0,20}
"""


def grammar_for(params: SamplingParams) -> str | None:
    """The GBNF grammar the output must follow, or None when decoding is unconstrained."""
    if params.grammar:
        return params.grammar
    if params.json_schema is not None:
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        schema = params.json_schema
        if not isinstance(schema, dict):
            raise BadRequest("json_schema must be a JSON Schema object", param="response_format")
        try:
            return json_schema_to_gbnf(json.dumps(schema))
        except Exception as e:  # the converter raises plain exceptions on unsupported schemas
            raise BadRequest(
                f"response_format.json_schema cannot be turned into a grammar: {e}; "
                "use a simpler schema (objects, arrays, strings, numbers, enums)",
                param="response_format",
            ) from e
    if params.json_object:
        return JSON_OBJECT_GBNF
    return None
