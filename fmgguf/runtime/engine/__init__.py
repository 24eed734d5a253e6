"""The llama.cpp engine (the one llama_cpp importer) and what runs beside it: load options, the log router,
the child entry points, the typed engine contract, generation results, continuous batching (slots,
sampling, grammars, prefix reuse, the KV state cache)."""
