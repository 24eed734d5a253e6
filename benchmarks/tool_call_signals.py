"""Whether the model's own probabilities separate the tool suite's must-call cases from its must-not-call
ones (a confidence threshold for ``tool_choice: "auto"``), on the real Qwen2.5-Coder-0.5B-Instruct.

    .venv/bin/python benchmarks/tool_call_signals.py [--json]

Each case of ``fmgguf bench --suite tools`` is rendered as the runtime renders it (the GGUF's template,
the suite's six tools, ``auto``) and two signals are read off the model, unconstrained, temperature 0:

- ``p_call``: the probability that the answer opens a tool call — over the first two tokens, the mass of
  every path whose text may still start a call by the runtime's own parser (``could_start``: ``<tool_call>``,
  ````` ```json `````, ``{"name"``, ``{\\n``...), i.e. what a lazy-grammar trigger decides on;
- ``name_mass``: where the greedy answer reaches ``"name": "``, the mass on tokens that begin a declared
  tool's name (what the lazy grammar keeps there); blank where the answer opens no call;
- ``p_yes``: the model as its own judge — the chat as text in one user message of its template (no
  tools), the tools' names and descriptions, and "must the assistant call one of the tools now?": the
  share of Yes in the Yes/No mass of its first token.

For each signal it prints the highest threshold that keeps every must-call case (its lowest must-call
value) and how many must-not-call cases whose greedy answer opens a call stay at or above it: those
calls a threshold on that signal cannot remove without losing a must-call case. Not a target check
(``run_all.py`` does not run it): it records why ``auto`` keeps its spurious calls on this model.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._harness import qwen_file  # noqa: E402

#: first tokens looked one token further (the rest of the first token's mass is a text answer)
TOP_FIRST = 8
#: tokens of greedy answer read before giving up on reaching a call's name
NAME_WITHIN = 16
_NAME_AT = re.compile(r'"name"\s*:\s*"$')


def _tools() -> Any:
    from fmgguf.bench.tool_cases import TOOLS

    return TOOLS


class Probe:
    """The model through llama-cpp-python, one prompt at a time, with the runtime's rendering."""

    def __init__(self, path: Path) -> None:
        import llama_cpp
        import numpy as np

        self.np, self.lc = np, llama_cpp
        self.llm = llama_cpp.Llama(str(path), n_ctx=4096, n_threads=1, n_threads_batch=1, verbose=False)
        self.n_vocab = self.llm.n_vocab()
        self.pieces = [self.llm.detokenize([i]).decode("utf-8", errors="replace") for i in range(self.n_vocab)]
        self.template = self.llm.metadata["tokenizer.chat_template"]
        self.prompt_len = 0
        self.names = [t.name + '"' for t in _tools()]
        #: the tokens a declared name may begin with (what the lazy grammar keeps at a call's name)
        self.name_starts = [i for i, piece in enumerate(self.pieces)
                            if piece and any(n.startswith(piece) for n in self.names)]

    def start(self, messages: list[dict[str, Any]]) -> Any:
        from fmgguf.runtime.prompt.prompts import render_chat
        from fmgguf.runtime.tools.tools import ToolRequest

        text = render_chat(messages, template=self.template, family=None,
                           tools=ToolRequest(_tools(), "auto", True)).text
        tokens = self.llm.tokenize(text.encode(), add_bos=False, special=True)
        self.llm.reset()
        self.llm.eval(tokens)
        self.prompt_len = len(tokens)
        return self.probs()

    def judge(self, messages: list[dict[str, Any]]) -> float:
        from fmgguf.runtime.prompt.prompts import render_chat

        tools = "\n".join(f"- {t.name}: {t.description}" for t in _tools())
        ask = ("Tools:\n" + tools + "\n\nConversation:\n" + "\n".join(_as_line(m) for m in messages if m["role"] != "system")
               + "\n\nTo reply to the user's last message, must the assistant call one of the tools now? "
               "Answer Yes or No.")
        text = render_chat([{"role": "user", "content": ask}], template=self.template, family=None).text
        self.llm.reset()
        self.llm.eval(self.llm.tokenize(text.encode(), add_bos=False, special=True))
        p = self.probs()
        yes, no = (sum(float(p[self.llm.tokenize(w.encode(), add_bos=False)[0]]) for w in (w1, w1.lower(), " " + w1))
                   for w1 in ("Yes", "No"))
        return yes / (yes + no)

    def probs(self) -> Any:
        np = self.np
        logits = np.ctypeslib.as_array(self.lc.llama_get_logits_ith(self.llm.ctx, -1), shape=(self.n_vocab,))
        p = np.exp(logits.astype(np.float64) - float(logits.max()))
        return p / p.sum()

    def after(self, tokens: list[int]) -> Any:
        """The next-token probabilities after the prompt and ``tokens`` (the KV cache cut back first)."""
        self.llm._ctx.kv_cache_seq_rm(-1, self.prompt_len, -1)
        self.llm.n_tokens = self.prompt_len
        self.llm.eval(tokens)
        return self.probs()


def _as_line(m: dict[str, Any]) -> str:
    if m.get("tool_calls"):
        return "assistant: (called " + ", ".join(c["function"]["name"] + " " + c["function"]["arguments"]
                                                  for c in m["tool_calls"]) + ")"
    if m["role"] == "tool":
        return "tool result: " + str(m["content"])
    return f"{m['role']}: {m['content']}"


def p_call(probe: Probe, first: Any) -> float:
    """The mass of two-token openings whose text may still be the start of a tool call."""
    from fmgguf.runtime.tools.tool_parser import could_start

    total = 0.0
    for t in probe.np.argsort(-first)[:TOP_FIRST]:
        text = probe.pieces[int(t)].lstrip()
        if not text or not could_start(text):
            continue
        second = probe.after([int(t)])
        ok = [i for i in probe.np.argsort(-second)[:64] if could_start((text + probe.pieces[int(i)]).lstrip())]
        total += float(first[t]) * float(second[ok].sum())
    return total


def name_mass(probe: Probe, first: Any) -> tuple[float | None, str]:
    """The mass on declared names where the greedy answer reaches ``"name": "``, and that answer's start."""
    out, tokens, probs = "", [], first
    for _ in range(NAME_WITHIN):
        if _NAME_AT.search(out):
            return float(probs[probe.name_starts].sum()), out
        tok = int(probs.argmax())
        tokens.append(tok)
        out += probe.pieces[tok]
        probs = probe.after(tokens)
    return None, out


def measure(path: Path) -> list[dict[str, Any]]:
    from fmgguf.bench.tool_cases import cases

    probe, rows = Probe(path), []
    for case in cases():
        first = probe.start([dict(m) for m in case.messages])
        mass, opening = name_mass(probe, first)
        rows.append({"id": case.id, "must_call": bool(case.expect), "p_call": round(p_call(probe, first), 3),
                     "name_mass": None if mass is None else round(mass, 3), "opens_call": mass is not None,
                     "opening": opening})
        rows[-1]["p_yes"] = round(probe.judge([dict(m) for m in case.messages]), 3)
        print(f"{case.id:24s} {'call' if case.expect else 'none':5s} p_call {rows[-1]['p_call']:.3f}  name_mass "
              f"{'-' if mass is None else f'{mass:.3f}'}  p_yes {rows[-1]['p_yes']:.2f}  {opening[:40]!r}",
              file=sys.stderr, flush=True)
    return rows


def overlap(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The highest threshold that keeps every must-call case that opens a call, and the must-not-call
    calls that stay at or above it."""
    must = [r[key] for r in rows if r["must_call"] and r["opens_call"] and r[key] is not None]
    threshold = min(must)
    left = [r["id"] for r in rows if not r["must_call"] and r["opens_call"] and (r[key] or 0.0) >= threshold]
    caught = [r["id"] for r in rows if not r["must_call"] and r["opens_call"] and r["id"] not in left]
    return {"signal": key, "threshold": threshold, "spurious_left": left, "spurious_removed": caught}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the rows and the overlaps as JSON")
    args = ap.parse_args(argv)
    rows = measure(qwen_file())
    result = {"rows": rows, "overlaps": [overlap(rows, k) for k in ("p_call", "name_mass", "p_yes")]}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for o in result["overlaps"]:
            print(f"{o['signal']}: keeping every must-call call needs a threshold <= {o['threshold']:.3f}; the "
                  f"must-not-call calls left: {', '.join(o['spurious_left']) or 'none'}; removed: "
                  f"{', '.join(o['spurious_removed']) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
