#!/usr/bin/env bash
# Build llama.cpp's `llama-server` (CPU) for the `llamacpp` rollout sampler, from the llama.cpp
# sources vendored in PyPI's llama-cpp-python sdist (PyPI is reachable where GitHub may not be).
#
#   bash scripts/build_llama_server.sh [OUT_DIR]      # default OUT_DIR: ~/.cache/agentsd/llama.cpp
#   export AGENTSD_LLAMA_SERVER=OUT_DIR/bin/llama-server
#
# Needs cmake and a C++17 compiler. About 10-40 minutes on two cores (`JOBS=N` to change the
# parallelism). LLAMA_CPP_PYTHON_VERSION pins the sdist (default 0.3.36, the version tested here).
set -euo pipefail

out="${1:-${AGENTSD_CACHE:-$HOME/.cache/agentsd}/llama.cpp}"
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
jobs="${JOBS:-$(nproc)}"
for tool in cmake c++ python3; do
    command -v "$tool" >/dev/null || { echo "build_llama_server.sh: $tool not found; install it (e.g. apt-get install cmake g++)" >&2; exit 1; }
done
if [ -x "$out/bin/llama-server" ]; then
    echo "$out/bin/llama-server exists; delete $out to rebuild"
    echo "export AGENTSD_LLAMA_SERVER=$out/bin/llama-server"
    exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work"
tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
src="$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)"
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON -DGGML_NATIVE="${GGML_NATIVE:-ON}" >"$work/cmake.log" \
    || { tail -30 "$work/cmake.log" >&2; exit 1; }
cmake --build "$work/build" --target llama-server -j "$jobs"
mkdir -p "$out/bin"
cp "$work/build/bin/llama-server" "$out/bin/llama-server.tmp"
mv "$out/bin/llama-server.tmp" "$out/bin/llama-server"
"$out/bin/llama-server" --version 2>&1 | tail -2 || true
echo "built $out/bin/llama-server"
echo "export AGENTSD_LLAMA_SERVER=$out/bin/llama-server"
