"""GGUF files: the bounded header parser, what a header holds, the checks that llama.cpp can load it, the
tensor shapes it expects, headers read remotely."""
