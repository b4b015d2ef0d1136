#!/usr/bin/env bash
# The GPU check (pipeline/perf/gpu_check.py) on a machine with an NVIDIA GPU, CUDA builds of JAX and/or
# PyTorch, and maybe no network (GUIDE section 7): install the wheels brought along in .whl/
# (`make gpu-wheels` fetches them where there is a network: keras and the two small packages it
# needs that such a machine lacks) into a private folder, then measure. make's install step is not
# used: it needs a network. Arguments go to `python -m pipeline.perf.gpu_check` (`--dry-run`: every step
# on the CPU at a tiny size). Environment: PYTHON (default python3), WHEELS (default .whl).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
wheels=${WHEELS:-.whl}
if compgen -G "$wheels/*.whl" > /dev/null; then
  site=$(mktemp -d)/site
  "$python" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  echo "installed $(compgen -G "$wheels/*.whl" | wc -l) wheel(s) from $wheels into $site"
else
  echo "no wheels in $wheels: using the packages this Python already has"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" -m pipeline.perf.gpu_check "$@"
