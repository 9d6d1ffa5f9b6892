#!/usr/bin/env bash
# Install the tools that check and test the streamapp.js package: Node 20.10+ (its WebSocket)
# and, with `npm ci` from client/package-lock.json, TypeScript. Quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/../client"
if ! command -v node >/dev/null || ! node -e '
  const [major, minor] = process.versions.node.split(".").map(Number);
  process.exit(major > 20 || (major === 20 && minor >= 10) ? 0 : 1);'; then
  echo "client: Node.js 20.10 or newer is needed (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi
stamp=node_modules/.installed-$(sha1sum package-lock.json | cut -c1-12)
if [[ ! -f $stamp ]]; then
  npm ci --no-audit --no-fund --loglevel=error
  touch "$stamp"
fi
