#!/usr/bin/env bash
# Builds llama-server from the llama.cpp that the installed llama-cpp-python vendors (its PyPI
# sdist), for benchmarks/bench_llama_server.py. CPU only, no multimodal tool; ~4 min on 2 cores.
# Prints the binary's path. Cached under ~/.cache/tavern-bench/<version>/.
set -euo pipefail
PY=${PYTHON:-python3}
VERSION=$($PY -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')
ROOT=${TAVERN_BENCH_CACHE:-$HOME/.cache/tavern-bench}/$VERSION
BIN=$ROOT/build/bin/llama-server
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
mkdir -p "$ROOT"
if [ ! -d "$ROOT/src" ]; then
  $PY -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$ROOT/sdist" >&2
  mkdir -p "$ROOT/src"
  tar -xzf "$ROOT"/sdist/llama_cpp_python-*.tar.gz -C "$ROOT/src" --strip-components=1
fi
cmake -S "$ROOT/src/vendor/llama.cpp" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF \
  -DGGML_NATIVE=ON >&2
cmake --build "$ROOT/build" --target llama-server -j"$(nproc)" >&2
echo "$BIN"
