"""Runner processes: each loaded model in a child process of its own (``child``), the protocol
spoken with it (``protocol``), the parent's proxy with the engine's surface (``proxy``), and the
supervisor that owns residency, restarts and crash records (``supervisor``, ``residency``,
``health``). Nothing here imports llama_cpp except through ``fmgguf.runtime.engine.engine`` in the child."""
