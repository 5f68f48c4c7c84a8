#!/usr/bin/env bash
# One command per check on the GPU host: install the bundle's wheels (once per machine), then run
# one phase of check_axolotl.py. The host needs only its Python with torch (HATRAIN_GPU_PYTHON).
#   scripts/gpu/run.sh PHASE BUNDLE_DIR        PHASE: overhead | pair | qlora-multi
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PHASE=$1
BUNDLE=$(cd "$2" && pwd)
PY=${HATRAIN_GPU_PYTHON:-/opt/torch/.venv/bin/python}
AXSITE=${HATRAIN_AXOLOTL_SITE:-/tmp/axsite}   # Axolotl and the wheels it lacks there
HSITE=${HATRAIN_SITE:-/tmp/hsite}             # hatrain's own dependencies, kept apart from Axolotl's
# NVLink multicast off in every process: it can take a shared host's GPUs out of service.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

install() {  # SITE WHEEL_DIR
  if [ ! -f "$1/.installed" ]; then
    local t0=$SECONDS
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$1" "$2"/*.whl 2>&1 | grep -v '^WARNING' || true
    touch "$1/.installed"
    echo "installed $(ls "$2" | wc -l) wheels into $1 in $((SECONDS - t0))s" >&2
  fi
}
install "$AXSITE" "$BUNDLE/wheels/axolotl"
install "$HSITE" "$BUNDLE/wheels/hatrain"
PYTHONPATH=$AXSITE "$PY" -c 'import axolotl; print("axolotl", axolotl.__version__)' >&2

# hatrain from this checkout: its three folders on PYTHONPATH, its two commands on PATH.
BIN=/tmp/hatrain-bin
mkdir -p "$BIN"
for cmd in agent client; do
  printf '#!/bin/sh\nexec %s -c "import sys; from hatrain.%s.cli import main; sys.argv[0] = \\"hatrain-%s\\"; main()" "$@"\n' \
    "$PY" "$cmd" "$cmd" > "$BIN/hatrain-$cmd"
  chmod +x "$BIN/hatrain-$cmd"
done
export PATH=$BIN:$PATH PYTHONPATH=$REPO/proto:$REPO/agent:$REPO/client:$HSITE
export HATRAIN_GPU_PYTHON=$PY HATRAIN_AXOLOTL_SITE=$AXSITE PYTHONUNBUFFERED=1
exec "$PY" "$REPO/scripts/gpu/check_axolotl.py" "$PHASE" --bundle "$BUNDLE"
