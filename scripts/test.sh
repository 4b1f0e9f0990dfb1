#!/usr/bin/env bash
# Installs everything the tests need on a Debian machine with Node 20, then runs them.
#   - Debian packages (when missing): redis-server, python3-grpcio, python3-grpc-tools
#     (the second-language client of the wire-contract test), prometheus (its promtool checks
#     the shards' and workers' /metrics), chromium (the headless browser the dashboard test
#     drives through puppeteer-core). Needs root or sudo.
#   - npm packages from package-lock.json (npm ci; its prepare step compiles TypeScript).
# Then: npm run cycles (fails on an import cycle), npm test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
/usr/bin/python3 -c 'import grpc' >/dev/null 2>&1 || need+=(python3-grpcio)
/usr/bin/python3 -c 'import grpc_tools.protoc' >/dev/null 2>&1 || need+=(python3-grpc-tools)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

npm ci --no-audit --no-fund
npm run -s cycles
npm test
