"""The machine: the devices llama.cpp can use and their free memory, and its CPU thread count."""
