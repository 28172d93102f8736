#!/usr/bin/env bash
# System libraries the Python packages need but pip cannot install. Called by `make install`,
# `make test` and `make demo`, so a fresh Debian/Ubuntu machine needs nothing else.
#   libusb-1.0-0: open3d (the FPS reference in the tests) fails to import without it.
#   g++ and the Python headers (python3-dev): mmmixlab.native compiles the fused CPU tokenizer
#   on first use (without them the tokenizer runs torch's ops, slower, and its tests skip).
# `system-deps.sh lab` (make lab-check): a headless browser and its driver instead,
#   chromium + chromium-driver (Debian's names) for scripts/check_lab.py.
set -euo pipefail
missing=()
if [ "${1:-}" = lab ]; then
  command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v chromedriver >/dev/null || [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
  other="install Chromium and a matching chromedriver on the PATH"
else
  ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || missing+=(libusb-1.0-0)
  command -v c++ >/dev/null || command -v g++ >/dev/null || missing+=(g++)
  py="${PYTHON:-python3}"
  inc="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null || true)"
  [ -n "$inc" ] && [ -f "$inc/Python.h" ] || missing+=(python3-dev)
  other="install libusb 1.0, a C++ compiler and the Python headers with your package manager"
fi
[ ${#missing[@]} -eq 0 ] && exit 0
echo "system-deps: installing ${missing[*]} (Debian packages)" >&2
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo"; else SUDO="none"; fi
if [ "$SUDO" != none ] && command -v apt-get >/dev/null; then
  if $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || \
     { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
    exit 0
  fi
fi
echo "system-deps: could not install ${missing[*]}. Run, then retry:" >&2
echo "    sudo apt-get install -y ${missing[*]}" >&2
echo "(other systems: $other)" >&2
exit 1
