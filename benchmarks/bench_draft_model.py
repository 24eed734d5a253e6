"""Draft-model speculative decoding (``speculative: draft``) against plain decoding, and against
llama.cpp's own llama-server with ``-md`` on the same pair, in the same run.

    .venv/bin/python benchmarks/bench_draft_model.py [--runs 3] [--tokens 400] [--skip-llama-server] [--json]

This machine holds no larger model of Qwen2.5-Coder-0.5B's vocabulary (the 1.5B-32B the catalog pairs
with it cannot be downloaded here), so the pair is the same weights at two precisions: the **target**
is an F16 file made from the catalog's Qwen2.5-Coder-0.5B-Instruct Q4_K_M (llama.cpp's quantizer with
requantize; ~1 GB, decoded at about half the Q4's speed), and the **draft** is the Q4_K_M itself. The
draft agrees with the target far more often than a real 0.5B draft agrees with a 7B, so the speed-up
here is the mechanism's at high acceptance, not a forecast for the real pairs.

- (a) edit prompt (rewrite a module with one rename) and (b) a new class: decode tokens/s of
  ``draft`` / ``off``, and the share of runs whose greedy text is identical (reported: the F16
  target's batched and single decodes may differ in the last bits). On this CPU the Q4_K_M draft
  costs about three quarters of an F16 target decode per token, so drafting barely pays; the target
  (>= 0.9) is that the cost-aware back-off (runtime/engine/draft_costs.py) keeps the loss small;
- (c) the edit prompt through llama-server ``-m F16 -md Q4_K_M`` against ``-m F16`` alone, same threads:
  fmgguf's speed-up must be at least 0.9x llama-server's (reported as a ratio of ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_speculative import EDIT, FRESH, N_CTX, chat_tokens, generate, model_path, threads  # noqa: E402

F16 = 1  # LLAMA_FTYPE_MOSTLY_F16
F32 = 0  # LLAMA_FTYPE_ALL_F32


def wide_target(q4: Path, ftype: int = F16) -> Path:
    """The Q4_K_M's weights in a wider type (made once, cached with fmgguf's benchmark files)."""
    from fmgguf.settings import load_settings

    out = load_settings().bench_dir / "models" / f"{q4.stem}-as-{'f16' if ftype == F16 else 'f32'}.gguf"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    proc = subprocess.run([sys.executable, "-m", "fmgguf.runtime.engine.engine_child", "--quantize", str(q4), str(tmp),
                           str(ftype), str(os.cpu_count() or 1), "--requantize"], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"could not make the F16 target: {proc.stderr.strip()[-300:]}")
    tmp.replace(out)
    return out


def pairs(engine, prompt: str, runs: int, tokens: int) -> dict:
    """off and draft back to back, ``runs`` times: medians, the median pair ratio, identical-text share."""
    ids = chat_tokens(engine, prompt)
    rate: dict[str, list[float]] = {"off": [], "draft": []}
    texts: dict[str, list[str]] = {"off": [], "draft": []}
    drafted = accepted = 0
    for i in range(runs):
        for mode in (("off", "draft") if i % 2 == 0 else ("draft", "off")):
            text, tps, stats = generate(engine, ids, tokens, mode)
            rate[mode].append(tps)
            texts[mode].append(text)
            drafted += stats.drafted_tokens
            accepted += stats.accepted_tokens
    ratios = [d / o for d, o in zip(rate["draft"], rate["off"], strict=True)]
    return {"off_tps": statistics.median(rate["off"]), "draft_tps": statistics.median(rate["draft"]),
            "ratio": statistics.median(ratios), "pairs": [round(r, 3) for r in ratios],
            "identical": sum(a == b for a, b in zip(texts["off"], texts["draft"], strict=True)) / runs,
            "drafted": drafted, "accepted": accepted}


def llama_server(target: Path, draft: Path, runs: int, tokens: int) -> dict:
    """The edit prompt through llama-server, without and with ``-md``, on the same threads."""
    import httpx

    from benchmarks._llama_server import LlamaServer, ensure_llama_server

    binary, out = ensure_llama_server(), {}
    t = str(threads())
    for name, extra in (("none", []), ("draft", ["--spec-type", "draft-simple", "-md", str(draft), "--spec-draft-n-max", "16",
                                                  "-td", t, "-tbd", t])):
        srv = LlamaServer(binary, ["-m", str(target), "-c", str(N_CTX), "-np", "1", "--temp", "0", "-t", t,
                                   "-tb", t, *extra]).start()
        try:
            rates, drafted, acc = [], 0, 0
            for _ in range(runs):
                r = httpx.post(srv.url + "/v1/chat/completions", timeout=1800, json={
                    "messages": [{"role": "user", "content": EDIT}], "max_tokens": tokens, "temperature": 0})
                r.raise_for_status()
                tm = r.json()["timings"]
                rates.append(float(tm["predicted_per_second"]))
                drafted, acc = drafted + int(tm.get("draft_n", 0) or 0), acc + int(tm.get("draft_n_accepted", 0) or 0)
            out[name] = {"tps": statistics.median(rates), "drafted": drafted, "accepted": acc}
        finally:
            srv.stop()
    out["ratio"] = out["draft"]["tps"] / out["none"]["tps"]
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=400)
    ap.add_argument("--skip-llama-server", action="store_true")
    ap.add_argument("--f32", action="store_true", help="an F32 target (~2 GB) instead of F16")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from benchmarks._harness import Report
    from fmgguf.runtime.engine.engine import Engine, LoadOptions

    draft = model_path()
    target = wide_target(draft, F32 if args.f32 else F16)
    report, result = Report(), {"target": target.name, "draft": draft.name, "load": os.getloadavg()[0],
                                "threads": threads()}
    opts = LoadOptions(n_ctx=N_CTX, parallel=4, n_threads=threads(), draft_path=str(draft), draft_name=draft.stem)
    with Engine(target, opts) as engine:
        generate(engine, chat_tokens(engine, "hi"), 4, "off")  # warm-up
        for key, prompt in (("edit", EDIT), ("fresh", FRESH)):
            r = result[key] = pairs(engine, prompt, args.runs, args.tokens)
            report.ratio(f"{key} (draft/off decode tokens/s)", r["draft_tps"], r["off_tps"], ">= 0.9", r["ratio"] >= 0.9,
                         f"pairs {r['pairs']}, identical text {r['identical']:.0%}, "
                         f"accepted {r['accepted']}/{r['drafted']} drafted")
    if not args.skip_llama_server:
        d = result["llama_server"] = llama_server(target, draft, max(1, args.runs - 1), args.tokens)
        print(f"llama-server: none {d['none']['tps']:.1f} tokens/s, -md {d['draft']['tps']:.1f} tokens/s "
              f"({d['ratio']:.2f}x), accepted {d['draft']['accepted']}/{d['draft']['drafted']}", flush=True)
        report.ratio("edit speed-up, fmgguf / llama-server -md", result["edit"]["ratio"], d["ratio"], ">= 0.9",
                     result["edit"]["ratio"] >= 0.9 * d["ratio"])
    if args.json:
        print(json.dumps(result, default=str, indent=1))
    report.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
