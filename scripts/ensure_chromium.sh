#!/usr/bin/env bash
# The dashboard test looks at rq-dashboard in a real browser: make sure headless Chromium exists.
# Debian's package; installed with apt-get where we can, else the test says what is missing.
set -u
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "newswatch: chromium not found; installing it with apt-get (for the dashboard test) ..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || true
  apt-get install -y -qq chromium >/dev/null 2>&1 || echo "newswatch: could not install chromium" >&2
fi
exit 0
