#!/usr/bin/env bash
# The GPU figures of benchmarks/RESULTS.md in one call: render (stock vs a2i, MFU), embed_audio (vs torchvggish)
# and generate latency, each under its own time limit so that one slow or failing part keeps the others.
#
#   bash benchmarks/gpu.sh [OUT_DIR]          # on a machine with CUDA PyTorch; tables go to OUT_DIR/*.md
#   A2I_GPU_SMOKE=1 bash benchmarks/gpu.sh    # the same steps at tiny sizes on CPU (what the tests run)
#
# A bare GPU machine without a2i's other packages takes them from wheels in .whl/ (`make gpu-wheels` here).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-benchmarks/out}}
python=${PYTHON:-python3}
mkdir -p "$out"
if ! "$python" -c "import diffusers, soundfile, imageio_ffmpeg, ffmpeg, ruamel.yaml, torchvggish" 2>/dev/null; then
  if ! compgen -G ".whl/*.whl" >/dev/null; then
    echo "gpu.sh: a2i's packages are missing here and .whl/ is empty: run 'make gpu-wheels' and carry .whl" >&2
    exit 1
  fi
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/a2i-site \
    .whl/*.whl || { echo "gpu.sh: installing .whl/ failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/a2i-site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore

if [[ ${A2I_GPU_SMOKE:-} == 1 ]]; then
  device=(--device cpu) render=(--tiny --compile) audio=(--tiny) generate=(--tiny --steps 2 --size 64 --repeats 1)
  limits=(300 120 120)
else
  device=(--device cuda) render=(--compile) audio=(--workers 16) generate=(--repeats 3)
  limits=(270 90 90)  # seconds: with the start, one device call of 8 minutes leaves time to rerun a part
fi

{ date -u +"%Y-%m-%d %H:%M UTC"; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv \
  2>/dev/null || echo "no nvidia-smi"; "$python" -c "import torch; print('torch', torch.__version__)"; } \
  | tee "$out/machine.txt"

status=0
step() {  # name, limit, script and arguments: the table to $out/name.md, the log to $out/name.log
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)"
  local start=$SECONDS
  timeout "$limit" "$python" "$@" 2>"$out/$name.log" | tee "$out/$name.md"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - start))s"
  if ((rc != 0)); then status=1; tail -n 15 "$out/$name.log"; fi
}
step render "${limits[0]}" benchmarks/render.py "${device[@]}" "${render[@]}"
step embed_audio "${limits[1]}" benchmarks/embed_audio.py "${device[@]}" "${audio[@]}"
step generate "${limits[2]}" benchmarks/generate.py --sd3-medium "${device[@]}" "${generate[@]}"
exit $status
