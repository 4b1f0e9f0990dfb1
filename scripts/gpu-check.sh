#!/usr/bin/env bash
# The worker's GPU check, on an x86-64 host with an NVIDIA GPU, from the repository root with the
# .gpu/ that scripts/gpu-bundle.sh made (docs/gpu.md). Needs python3 (to unpack) and root (to
# unpack the Vulkan loader into / where the host lacks one); no Node.js, no network.
#
#   scripts/gpu-check.sh OUTPUT_DIR [BACKEND]     BACKEND: webgpu (default), wasm or cpu
#
# Writes to OUTPUT_DIR:
#   host.txt               the GPU and driver (nvidia-smi), this host's CPU count
#   gpu-compare.json       bench/gpu-compare.ts: BACKEND's gradients against the cpu backend's on
#                          fresh random inputs, and worker step times on BACKEND and on wasm
#   local-BACKEND.json     `tessera local --backend BACKEND --json`: the default run (mnist-mlp,
#                          10 epochs, 2 shards, 2 workers) with the workers' compute on BACKEND
#   local-wasm.json        the same run on wasm, for comparison
#   ctr-BACKEND.json       `tessera local --model ctr` on BACKEND: the sparse model's dense part on it
#   moons-BACKEND.json     the two-moons example on BACKEND: a user model's gradients by autodiff
# and prints each as it goes. Takes 3–4 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu-check.sh OUTPUT_DIR [BACKEND]}
backend=${2:-webgpu}
mkdir -p "$out"
out=$(cd "$out" && pwd)
[ -f .gpu/bundle.tar.xz ] || { echo "gpu-check: no .gpu/bundle.tar.xz here; make it with scripts/gpu-bundle.sh on a networked host" >&2; exit 1; }

# The Vulkan loader and libglvnd, unless the host has them.
if ! ldconfig -p | awk '/libvulkan\.so\.1 /{found = 1} END {exit !found}'; then
  for f in .gpu/gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -n "${VK_DRIVER_FILES:-}" ] || [ ! -f "$icd" ] || export VK_DRIVER_FILES=$icd
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}

root=$(mktemp -d)
python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' .gpu/bundle.tar.xz "$root"
cd "$root"

{
  (nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not found")
  echo "cpus: $(nproc)"
  echo "node: $(./node --version)"
} | tee "$out/host.txt"

echo "== gpu-compare --backend $backend"
./node dist/bench/gpu-compare.js --backend "$backend" | tee "$out/gpu-compare.json"
runs=("$backend")
[ "$backend" = wasm ] || runs+=(wasm)
for b in "${runs[@]}"; do
  echo "== tessera local --backend $b"
  TESSERA_LOG_LEVEL=warn ./node bin/tessera.js local --backend "$b" --json | tee "$out/local-$b.json"
done
if [ "$backend" != wasm ]; then
  echo "== tessera local --model ctr --backend $backend"
  TESSERA_LOG_LEVEL=warn ./node bin/tessera.js local --model ctr --backend "$backend" --json | tee "$out/ctr-$backend.json"
  echo "== tessera local --model docs/examples/two-moons.js --backend $backend"
  TESSERA_LOG_LEVEL=warn ./node bin/tessera.js local --model docs/examples/two-moons.js --epochs 5 --backend "$backend" --json | tee "$out/moons-$backend.json"
fi
echo "gpu-check: figures in $out"
