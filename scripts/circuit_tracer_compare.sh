#!/usr/bin/env bash
# Lesson 11's attribution graphs against the reference implementation, circuit-tracer 0.5.0
# (docs/circuit-tracer.md says what is compared and what came out).
#
#   bash scripts/circuit_tracer_compare.sh [storyworld-llama storyworld-4l]
#
# circuit-tracer pins transformers <=4.57.3 and huggingface-hub <1.0, older than the course's, so it
# gets its own virtual environment, build/circuit-tracer-env (git-ignored; made on the first run and
# reused after). The course's side runs in .venv and hands its graphs over in build/circuit-tracer/;
# circuit-tracer's side reads them, loads the same zoo model and transcoders from data/ (the hub is never
# asked) and writes benchmarks/circuit_tracer.json.
#
# CT_TORCH is what pip installs torch from there, split into words (default: the CPU build the course's .venv
# has, e.g. torch==2.13.0+cpu, where pip can find it; e.g. CT_TORCH="torch --index-url <PyTorch's CPU wheel
# index>"). If that fails, plain "torch" from PyPI is installed (on Linux, the much larger CUDA build; the
# comparison runs on the CPU either way). CT_PYTHON picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(storyworld-llama storyworld-4l)
env=build/circuit-tracer-env
course_python=.venv/bin/python
start=$(date +%s)

if [ ! -x "$env/bin/python" ] || ! "$env/bin/python" -c "import circuit_tracer" 2>/dev/null; then
    torch_spec=${CT_TORCH:-}
    if [ -z "$torch_spec" ]; then
        course_torch=$("$course_python" -c "import torch; print(torch.__version__)" 2>/dev/null || true)
        torch_spec=torch
        [[ "$course_torch" == *+cpu ]] && torch_spec="torch==$course_torch"
    fi
    echo "building $env: $torch_spec, circuit-tracer==0.5.0"
    rm -rf "$env"
    "${CT_PYTHON:-python3}" -m venv "$env"
    # shellcheck disable=SC2086  # CT_TORCH may carry pip options
    "$env/bin/pip" install -q $torch_spec "circuit-tracer==0.5.0" ||
        "$env/bin/pip" install -q torch "circuit-tracer==0.5.0"
fi
built=$(date +%s)
echo "environment ready in $((built - start)) s"

"$course_python" scripts/circuit_tracer_compare.py course --models "${models[@]}"
course_done=$(date +%s)
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$env/bin/python" scripts/circuit_tracer_compare.py reference --models "${models[@]}" \
    --seconds $((built - start)) $((course_done - built))
done_at=$(date +%s)
echo "environment $((built - start)) s, course side $((course_done - built)) s, circuit-tracer side $((done_at - course_done)) s"
