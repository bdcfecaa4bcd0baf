"""The one package that reaches below `llama_cpp.Llama` into llama.cpp's C API.

Its modules call the raw binding (`llama_cpp.llama_*` and its ctypes structs;
tests/engines/test_one_binding.py holds every other module to that), so a change in the binding
is fixed here, and everything else talks to `llama_cpp.Llama` or to the typed functions here:

- `context`: the KV cells of several sequences (`KVCache`), batched decodes, aborting a decode,
  the context parameters `Llama()` cannot be asked for (`several_sequences`), logits rows;
- `model`: vocabulary queries and token pieces, the library's logging and GPU support;
- `sampling`: llama.cpp's sampler chain (`SamplerChain`, `init_*`) with Python steps in it.

Checked against llama-cpp-python 0.3.36 (llama.cpp with the `llama_memory_*` API and
`kv_unified`). `llama_cpp` is imported inside each function: importing the C library costs
~0.2 s, which `tavern --help` and the TUI's first frame must not pay. The binding's functions
reach the type checker untyped (its `ctypes_function` decorator carries no annotations), so
results are named with the C types the binding declares for them.
"""
