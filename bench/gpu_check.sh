#!/usr/bin/env bash
# Full benchmark suite on the GPU device machine (see /work/shared/GPU_CHECKS.md).
#
# Prepare here (CPU), in the repo root:
#   1. wheels for the host's Python 3.12 into .whl/ (GPU_CHECKS.md list, plus what the bench reads bags and
#      memory with):  .venv/bin/pip download --no-deps --only-binary=:all: --python-version 3.12 \
#        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#        --platform manylinux2014_x86_64 -d .whl open_clip_torch==3.3.0 ftfy wcwidth hydra-core==1.3.2 \
#        omegaconf==2.3.0 iopath rosbags==0.11.9 apsw backports.zstd lz4 ruamel.yaml psutil
#      (+ antlr4 and sam2 wheels as in GPU_CHECKS.md)
#   2. the recordings (no renderer needed there):
#        .venv/bin/camfusion-bench --suite full --prepare-only --data .bench_data
#   3. run with carry [".whl", ".bench_data"]:   bash bench/gpu_check.sh
# Writes $OUT/full.json (and $OUT/env.txt). The node/ROS parts skip themselves: no rclpy there.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/site
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 --version
  ls ~/.cache/huggingface ~/.cache/torch /root/.cache 2>/dev/null
} > "$OUT/env.txt" 2>&1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site $(ls .whl/*.whl | grep -v sam2) \
    >> "$OUT/env.txt" 2>&1 || echo "pip install of carried wheels failed" | tee -a "$OUT/env.txt"
  for w in .whl/sam2-*.whl; do [ -f "$w" ] && unzip -qo "$w" -d /tmp/site; done
fi
export PYTHONPATH=/tmp/site:$PWD
python3 -c "import open_clip, sam2, timm, rosbags, psutil; print('imports ok, timm', timm.__version__)" \
  >> "$OUT/env.txt" 2>&1 || { cat "$OUT/env.txt"; echo "error: missing packages on the device host"; exit 1; }
DATA=()
[ -d .bench_data ] && DATA=(--data .bench_data)
python3 -m camfusion_ros.bench.cli --suite full --device cuda --out "$OUT/full.json" "${DATA[@]}" \
  > /dev/null 2> "$OUT/bench.log"
rc=$?
tail -n 40 "$OUT/bench.log"
exit $rc
