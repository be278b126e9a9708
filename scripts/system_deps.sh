#!/usr/bin/env bash
# Debian packages the tests need (headless Chromium + driver for the MLflow UI test).
# Idempotent and quiet when present; skipped (the UI test then skips) when not root or no apt.
set -u
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "[system-deps] chromium not installed and cannot apt-get here: the browser test will be skipped" >&2
  exit 0
fi
echo "[system-deps] installing chromium + chromium-driver (one time)..." >&2
{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } >/tmp/seem_ray_apt.log 2>&1 \
  || echo "[system-deps] apt-get failed (see /tmp/seem_ray_apt.log): the browser test will be skipped" >&2
exit 0
