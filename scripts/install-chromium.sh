#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for tests/test_report_html.py (the report page is checked in
# a real browser). Idempotent: does nothing when /usr/bin/chromium already exists. Needs root (CI runs as root).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
chromium --version
