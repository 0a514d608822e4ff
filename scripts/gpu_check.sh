#!/bin/bash
# The prepared GPU check (rollout throughput at a real model size, trainer step vs compute floor and
# frozen-teacher memory), for a session that is lent a GPU. It was never run: no machine was lent.
#
# Prepare once on the CPU machine (the device has no network and lacks gymnasium and gguf):
#   echo /.gpu/ >> .git/info/exclude && mkdir -p .gpu/qwen3-0.6b
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .gpu gymnasium==1.4.0 farama-notifications
#   python -c "from agentsd.policy.models import load_tokenizer, resolve_model; from transformers import AutoConfig; \
#       r = resolve_model('smollm2'); load_tokenizer('smollm2').save_pretrained('.gpu/smollm2-tokenizer'); \
#       AutoConfig.from_pretrained(r.path, **r.from_pretrained_kwargs()).save_pretrained('.gpu/smollm2-tokenizer')"
#   write Qwen3-0.6B's public config.json (model_type qwen3, hidden 1024, 28 layers, 16 heads, 8 kv heads,
#   head_dim 128, intermediate 3072, vocab 151936, tied embeddings) to .gpu/qwen3-0.6b/config.json
# Then on the device: run(command="bash scripts/gpu_check.sh", carry=[".gpu"]).
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
echo "== trainer bench: random weights with Qwen3-0.6B's config =="
timeout 200 python3 scripts/bench_trainer.py --model-like .gpu/qwen3-0.6b --device cuda --batch 8 --seq 1024 \
    --repeats 3 2>&1 | tee "$OUT/bench_trainer.txt"
echo "== rollout bench: Qwen3-0.6B architecture, random weights, SmolLM2 tokenizer =="
# plain HF generation vs KV reuse vs the static cache vs static + torch.compile, batch 64 (issue
# target: compiled >= 3x plain); one repeat each so the compile fits the device budget
timeout 300 python3 scripts/bench_rollout.py --random qwen3-0.6b --model .gpu/smollm2-tokenizer --device cuda \
    --env Sokoban-Easy-v0 --episodes 64 --batches 64 --max-tokens 64 --max-turns 3 --repeats 1 \
    --modes plain,kv,static,compiled --json "$OUT/bench_rollout.json" --markdown "$OUT/bench_rollout.md" \
    2>&1 | tee "$OUT/bench_rollout.txt"
