"""What one llama.cpp decode costs by the rows in its batch, on the real Qwen2.5-Coder-0.5B-Instruct Q4_K_M
on this machine's CPU: the ceiling of four clients against one, and of a speculative draft's rows.

    .venv/bin/python benchmarks/batch_row_costs.py [--threads 1,2] [--json]

A batch of ``rows`` tokens of one sequence, after a 300-token context, decoded with logits on every row
(what four generating slots, or a slot and its draft, ask for) and on the last only (a prompt chunk);
the median of eight decodes, the tail removed from the KV cache after each. Straight through
llama-cpp-python, not the scheduler: no server, no sampling, nothing of fmgguf's in the time.

From the rows it prints the best aggregate four slots could reach against one, ``4 * t(1) / t(4)``,
where every step decodes one token of each: the target of 1.5x needs four rows to cost at most 2.67
single decodes. Not a target check (``run_all.py`` does not run it): it records why four clients stay
under 1.5x on a CPU whose small batches are compute-bound.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._harness import qwen_file  # noqa: E402

ROWS = (1, 2, 3, 4, 8, 16, 32, 64)
CONTEXT, REPEATS = 300, 8


class Decoder:
    """One model and context at ``threads`` threads, and a batch it decodes again and again."""

    def __init__(self, path: Path, threads: int) -> None:
        import llama_cpp

        self.lc = llama_cpp
        self.llm = llama_cpp.Llama(str(path), n_ctx=1024, n_batch=512, n_threads=threads,
                                   n_threads_batch=threads, verbose=False)
        self.tokens = self.llm.tokenize(b"def fibonacci(n):\n    " * 80)[:CONTEXT + max(ROWS)]
        self.llm.eval(self.tokens[:CONTEXT])
        self.mem = llama_cpp.llama_get_memory(self.llm.ctx)

    def ms(self, rows: int, every_row: bool) -> float:
        """Median milliseconds of one decode of ``rows`` rows."""
        lc, batch = self.lc, self.lc.llama_batch_init(rows, 0, 1)
        times = []
        try:
            for _ in range(REPEATS):
                batch.n_tokens = rows
                for i in range(rows):
                    batch.token[i], batch.pos[i] = self.tokens[CONTEXT + i], CONTEXT + i
                    batch.n_seq_id[i], batch.seq_id[i][0] = 1, 0
                    batch.logits[i] = 1 if every_row or i == rows - 1 else 0
                started = time.perf_counter()
                if lc.llama_decode(self.llm.ctx, batch) != 0:
                    raise RuntimeError(f"llama_decode refused a batch of {rows} rows")
                times.append(time.perf_counter() - started)
                lc.llama_memory_seq_rm(self.mem, 0, CONTEXT, -1)
        finally:
            lc.llama_batch_free(batch)
        return 1000 * statistics.median(times)

    def close(self) -> None:
        self.llm.close()


def measure(path: Path, threads: int) -> dict[str, object]:
    dec = Decoder(path, threads)
    try:
        dec.ms(1, True)  # warm-up
        rows = [{"rows": n, "every_row_ms": round(dec.ms(n, True), 1), "last_row_ms": round(dec.ms(n, False), 1)}
                for n in ROWS]
    finally:
        dec.close()
    one = rows[0]["every_row_ms"]
    for r in rows:
        r["single_decodes"] = round(r["every_row_ms"] / one, 2)
    four = next(r for r in rows if r["rows"] == 4)
    return {"threads": threads, "rows": rows, "four_vs_one_ceiling": round(4 * one / four["every_row_ms"], 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    path = qwen_file()
    results = [measure(path, int(t)) for t in args.threads.split(",")]
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    for res in results:
        print(f"threads {res['threads']}: four slots against one at most {res['four_vs_one_ceiling']:.2f}x")
        print("  rows | every row ms | last row ms | single decodes")
        for r in res["rows"]:
            print(f"  {r['rows']:4d} | {r['every_row_ms']:12.1f} | {r['last_row_ms']:11.1f} | {r['single_decodes']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
