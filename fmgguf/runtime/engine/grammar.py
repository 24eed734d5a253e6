"""Grammar-constrained sampling on llama.cpp, for :class:`~fmgguf.runtime.engine.constraints.Constraint`.

llama.cpp code reached through :func:`fmgguf.runtime.engine.llama_lib.lib` (the one module importing llama_cpp):
the JSON-schema-to-GBNF converter that llama-cpp-python ships, a check that a GBNF grammar parses, and the
triggers as one "anywhere in the output" pattern for llama.cpp's lazy grammar sampler (how llama.cpp's own
server builds it; the slot scheduler's sampler chain, :mod:`fmgguf.runtime.engine.sampling`, uses it), so the
grammar's root matches the text from the trigger on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from fmgguf.errors import InvalidRequestError

if TYPE_CHECKING:
    from fmgguf.runtime.engine.llama_lib import LlamaLib, llama_vocab_p

_REGEX_SPECIAL = set("\\^$.|?*+()[]{}/")


def regex_escape(text: str) -> str:
    """``text`` as a literal in an ECMAScript regex (std::regex, which llama.cpp uses)."""
    return "".join("\\" + ch if ch in _REGEX_SPECIAL else ch for ch in text)


def trigger_pattern(triggers: tuple[str, ...]) -> str:
    """llama.cpp's lazy-grammar pattern for trigger words: the whole output matches it, and its first group
    starts where the first trigger does (the grammar sees the output from there on), as common_sampler
    builds it."""
    return "[\\s\\S]*?(" + "|".join(regex_escape(t) for t in triggers) + ")[\\s\\S]*"


#: keywords llama-cpp-python's converter leaves out of the grammar (the value still has the right type
#: and shape, but these bounds are not enforced)
LOOSE_KEYWORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "uniqueItems",
                  "minProperties", "maxProperties", "propertyNames", "patternProperties", "dependentRequired",
                  "dependentSchemas", "if", "then", "else", "contains", "unevaluatedProperties")


def loose_parts(schema: object, where: str = "$") -> list[str]:
    """Where ``schema`` uses a keyword the grammar cannot enforce (``$.properties.n.minimum``)."""
    out: list[str] = []
    if isinstance(schema, Mapping):
        for key, value in schema.items():
            if key in ("properties", "$defs", "definitions") and isinstance(value, Mapping):
                for name, sub in value.items():  # names here are the user's, not keywords
                    out += loose_parts(sub, f"{where}.{key}.{name}")
            elif key in LOOSE_KEYWORDS:
                out.append(f"{where}.{key}")
            elif key not in ("enum", "const", "default", "examples"):
                out += loose_parts(value, f"{where}.{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            out += loose_parts(value, f"{where}[{i}]")
    return out


def json_schema_to_gbnf(schema: Mapping[str, object], what: str = "the schema", root: str = "root",
                        strict: bool = False) -> str:
    """llama.cpp's JSON-schema-to-GBNF conversion; a schema it cannot express is an InvalidRequestError
    naming the part. Bounds it leaves out (:data:`LOOSE_KEYWORDS`) are refused the same way when
    ``strict``; otherwise the grammar keeps the types and shape and the bounds go unchecked."""
    from fmgguf.runtime.engine.llama_lib import lib

    loose = loose_parts(schema) if strict else []
    if loose:
        raise InvalidRequestError(f"{what} uses {loose[0]}, which the grammar cannot enforce",
                                  fix="drop that keyword, or send the schema without strict")

    conv = lib().llama_grammar
    try:
        converter = conv.SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
        resolved = converter.resolve_refs(any_where_typeless(json.loads(json.dumps(schema))), "input")
        converter.visit(resolved, "" if root == "root" else root)
        gbnf = _pretty_space(_no_control_chars(converter.format_grammar()))
    except (ValueError, KeyError, TypeError, AttributeError, NotImplementedError, AssertionError,
            RecursionError) as exc:
        raise InvalidRequestError(f"{what} cannot be turned into a grammar: {_one_line(exc)}",
                                  fix="simplify that part of the JSON schema (no remote $ref, no unsupported "
                                      "keywords)") from None
    return gbnf


#: keywords that only describe a schema: a sub-schema of nothing else accepts any JSON value
_ANNOTATIONS = frozenset({"description", "title", "examples", "default", "$comment", "deprecated", "readOnly",
                          "writeOnly"})
_ANY = ["object", "array", "string", "number", "boolean", "null"]
#: length bounds above this are left out: the converter spells a bound out as that many nested rules
#: (Claude Code's Workflow tool has maxLength 524288: a 4 MB grammar that overflows llama.cpp's stack)
MAX_SPELLED_BOUND = 256
_BOUNDS = ("maxLength", "minLength", "maxItems", "minItems")


def any_where_typeless(schema: object) -> object:
    """``schema`` with every sub-schema that holds only annotations (``{"description": ...}``, ``{}``) made
    an explicit "any JSON value": JSON Schema's meaning, which llama-cpp-python's converter rejects
    ("Unrecognized schema") or narrows to objects. Claude Code's tools have such parameters. Length
    bounds above :data:`MAX_SPELLED_BOUND` are left unchecked (the grammar would not fit the stack)."""
    if not isinstance(schema, Mapping):
        return schema
    if not set(schema) - _ANNOTATIONS:
        return {**schema, "type": list(_ANY)}
    out: dict[object, object] = {k: v for k, v in schema.items()
                                 if not (k in _BOUNDS and isinstance(v, int) and v > MAX_SPELLED_BOUND)}
    for key in ("properties", "$defs", "definitions", "patternProperties"):
        if isinstance(subs := out.get(key), Mapping):
            out[key] = {name: any_where_typeless(sub) for name, sub in subs.items()}
    for key in ("items", "additionalProperties", "not", "contains"):
        if isinstance(sub := out.get(key), Mapping):
            out[key] = any_where_typeless(sub)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if isinstance(subs := out.get(key), list):
            out[key] = [any_where_typeless(sub) for sub in subs]
    return out


def _no_control_chars(gbnf: str) -> str:
    """JSON strings hold no raw control characters (llama.cpp's C++ converter says so; the Python port
    that llama-cpp-python ships lets a raw newline into a string, which ``json.loads`` then rejects)."""
    return gbnf.replace(r'char ::= [^"\\] |', r'char ::= [^"\\\x7F\x00-\x1F] |')


def _pretty_space(gbnf: str) -> str:
    """Whitespace between JSON tokens as llama.cpp's C++ converter allows it: a space, or a line break and
    an indent. The Python port allows one space only, so pretty-printed JSON (how Qwen2.5-Coder writes
    calls: ``{\n  "name": ...``) could never match, nor a lazy trigger on it."""
    return gbnf.replace('space ::= " "?', 'space ::= | " " | "\\n"{1,2} [ \\t]{0,20}')


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).replace("(use --allow-fetch for force)", "").split())
    return text or type(exc).__name__


def check_grammar(vocab: llama_vocab_p, gbnf: str) -> None:
    """InvalidRequestError unless llama.cpp parses ``gbnf`` (its sampler init returns NULL otherwise)."""
    mod = _lib()
    ptr = mod.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
    if not ptr:
        raise InvalidRequestError("the grammar does not parse (llama.cpp's log names the line)",
                                  fix="check the GBNF grammar")
    mod.llama_sampler_free(ptr)


def _lib() -> LlamaLib:
    from fmgguf.runtime.engine.llama_lib import lib

    return lib()
