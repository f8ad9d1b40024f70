#!/usr/bin/env bash
# Debian packages curato's demo (and, with the argument "test", its tests) use.
# Needs root (or sudo); skips what is installed.
set -euo pipefail
packages=(dataset-fashion-mnist)
if [ "${1:-}" = "test" ]; then
    packages+=(chromium)  # the HTML report and the labeling app are tested in a real browser
    packages+=(fortunes)  # real labelled short texts (category = label) for the text checks' tests
fi
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then SUDO="sudo"; else
        echo "install-system: need root to install ${missing[*]} (apt-get); install them, or the demo falls back" \
             "to scikit-learn digits and browser tests fail" >&2
        exit 0
    fi
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
