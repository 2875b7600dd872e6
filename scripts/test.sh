#!/usr/bin/env bash
# Set up (or reuse) the test environment, then run ruff, mypy and the whole test suite.
#
# The virtual environment lives outside the checkout, keyed by a hash of the dependency files,
# so repeated runs (and CI runs on fresh clones) do not reinstall torch. Extra arguments go to
# pytest, e.g. `make test ARGS="-k window"` or `scripts/test.sh -k window`.
set -euo pipefail
cd "$(dirname "$0")/.."

shared=${MASKWATCH_SHARED:-$(cd .. && pwd)/shared}
export MASKWATCH_SHARED=$shared
export MASKWATCH_MIRROR=${MASKWATCH_MIRROR:-file://$shared/mirror}

# System packages: OpenCV's runtime libraries; Xvfb, xdotool and ImageMagick for the window
# test; Chromium and Node for the browser test; Mosquitto and PostgreSQL (each started by the
# tests on loopback: PostgreSQL's initdb and postgres from /usr/lib/postgresql/*/bin).
need=()
ldconfig -p | grep -q 'libGL.so.1 ' || need+=(libgl1)
ldconfig -p | grep -q 'libglib-2.0.so.0 ' || need+=(libglib2.0-0)
command -v Xvfb >/dev/null || need+=(xvfb)
command -v xdotool >/dev/null || need+=(xdotool)
command -v import >/dev/null || need+=(imagemagick)
[ -d /usr/share/fonts/truetype/dejavu ] || need+=(fonts-dejavu-core)
command -v chromium >/dev/null || need+=(chromium)
command -v node >/dev/null || need+=(nodejs npm)
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null || need+=(mosquitto)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null ||
  need+=(postgresql)
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "test: installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "test: missing ${need[*]} (apt-get install them); the window test will be skipped" >&2
  fi
fi

key=$(cat pyproject.toml scripts/test.sh | sha256sum | cut -c1-16)
cache=${MASKWATCH_VENV_CACHE:-$HOME/.cache/maskwatch-test}
venv=$cache/venv-$key
if [ ! -f "$venv/.complete" ]; then
  echo "test: creating $venv (once per change of pyproject.toml or this script)" >&2
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip setuptools wheel
  # torch first, its CPU build (training runs on the CPU; the CUDA build is ten times larger).
  # This machine keeps torch 2.13.0+cpu in its wheel store; elsewhere PyTorch's CPU index.
  "$venv/bin/pip" install -q torch==2.13.0 ||
    "$venv/bin/pip" install -q torch --index-url https://download.pytorch.org/whl/cpu
  "$venv/bin/pip" install -q ".[test]"
  touch "$venv/.complete"
fi
# Each run marks its environment used; those of other dependency files (other branches, other
# checkouts) go once unused for 3 days, not at once: another checkout may be testing with one.
touch "$venv"
find "$cache" -maxdepth 1 -name 'venv-*' ! -path "$venv" -mtime +2 -exec rm -rf {} +
# playwright-core for the browser test, cached beside the venv, keyed by its lock file.
node_key=$(sha256sum tests/browser/package-lock.json | cut -c1-16)
node_cache=$cache/node-$node_key
if [ ! -f "$node_cache/.complete" ]; then
  rm -rf "$node_cache" && mkdir -p "$node_cache"
  cp tests/browser/package.json tests/browser/package-lock.json "$node_cache/"
  (cd "$node_cache" && npm ci --no-audit --no-fund --silent)
  touch "$node_cache/.complete"
fi
touch "$node_cache"
find "$cache" -maxdepth 1 -name 'node-*' ! -path "$node_cache" -mtime +2 -exec rm -rf {} +
ln -sfn "$node_cache/node_modules" tests/browser/node_modules

# The package itself is reinstalled every run (fast, no dependencies): tests run what users get.
"$venv/bin/pip" install -q --no-deps --no-build-isolation --force-reinstall . >/dev/null
rm -rf build

"$venv/bin/python" -m ruff check src tests benchmarks
"$venv/bin/python" -m mypy
# Two workers: most tests wait on subprocesses, servers and browsers (6 min -> 3.7 min here).
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider -n 2 "$@"
