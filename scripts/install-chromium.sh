#!/usr/bin/env bash
# Installs the Debian packages the tests need: Chromium for the real-browser tests (Playwright
# drives it; it never downloads a browser), the DejaVu fonts the text-reading tests render, and
# espeak-ng, which speaks the sentences the speech tests transcribe.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] && [ -x /usr/bin/espeak-ng ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null; then
    SUDO="sudo"
else
    echo "Missing Debian packages: install 'chromium', 'fonts-dejavu-core' and 'espeak-ng' (apt-get install chromium fonts-dejavu-core espeak-ng) and run again." >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core espeak-ng
