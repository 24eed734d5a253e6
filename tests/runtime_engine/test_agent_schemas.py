"""Tool schemas as Claude Code sends them become grammars llama.cpp takes: a parameter with only a
description means any JSON value (llama-cpp-python's converter calls it "Unrecognized schema"), and a huge
length bound (its Workflow tool: maxLength 524288) is left unchecked instead of being spelled out as a
4 MB grammar, which overflowed llama.cpp's stack (the runner died with SIGSEGV)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

WORKFLOW = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "additionalProperties": False,
            "properties": {"script": {"type": "string", "maxLength": 524288, "description": "the script"},
                           "args": {"description": "any value, passed verbatim"},
                           "tags": {"type": "array", "items": {}, "maxItems": 10}}}

_SAMPLER = r"""
import json, sys
from fmgguf.runtime.engine.engine import Engine, LoadOptions
from fmgguf.runtime.engine.llama_lib import lib
from fmgguf.runtime.engine.grammar import json_schema_to_gbnf
gbnf = json_schema_to_gbnf(json.loads(sys.argv[2]))
with Engine(sys.argv[1], LoadOptions(n_ctx=128)) as e:
    ptr = lib().llama_sampler_init_grammar(e.vocab, gbnf.encode(), b"root")
    print("OK" if ptr else "NULL", len(gbnf))
"""


def test_claude_code_schemas_make_small_grammars_llama_cpp_takes(qwen_path: Path) -> None:
    import json

    from fmgguf.runtime.engine.grammar import any_where_typeless, json_schema_to_gbnf

    fixed = any_where_typeless(WORKFLOW)
    assert fixed["properties"]["args"]["type"] == ["object", "array", "string", "number", "boolean", "null"]
    assert "maxLength" not in fixed["properties"]["script"] and fixed["properties"]["tags"]["maxItems"] == 10
    assert fixed["properties"]["tags"]["items"]["type"][0] == "object"
    gbnf = json_schema_to_gbnf(WORKFLOW)
    assert len(gbnf) < 20_000
    r = subprocess.run([sys.executable, "-c", _SAMPLER, str(qwen_path), json.dumps(WORKFLOW)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("OK"), (r.returncode, r.stderr[-1000:])
