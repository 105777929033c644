#!/usr/bin/env bash
# System packages the integration and browser tests need: Debian's Chromium (Playwright drives
# it at /usr/bin/chromium; `playwright install` cannot download browsers here) and systemd's
# `systemd-analyze` (checks infra/anvil-forge.service).
# SeaweedFS, PostgreSQL, cfn-lint and checkov come from PyPI via `make test`.
set -euo pipefail
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium fonts-dejavu-core)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "install-system-packages: not root; tests needing ${missing[*]} will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [ -x /usr/bin/chromium ]; then /usr/bin/chromium --version; fi
