"""RPC workers: the --rpc spec, the pure-Python probe of each worker, and the worker process."""
