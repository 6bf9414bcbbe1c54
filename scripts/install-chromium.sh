#!/usr/bin/env bash
# Installs the Debian packages the tests need: Chromium for the real-browser tests (Playwright
# drives it; it never downloads a browser) and the DejaVu fonts the text-reading tests render.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null; then
    SUDO="sudo"
else
    echo "Missing Debian packages: install 'chromium' and 'fonts-dejavu-core' (apt-get install chromium fonts-dejavu-core) and run again." >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
