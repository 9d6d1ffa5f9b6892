#!/usr/bin/env bash
# Install the browser the browser tests drive, Debian's chromium, when it is missing.
# (Playwright drives this system binary; its own browser download is not used.)
set -euo pipefail
if [[ ! -x ${STREAMAPP_CHROMIUM:-/usr/bin/chromium} ]]; then
  echo "browser: installing chromium"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
