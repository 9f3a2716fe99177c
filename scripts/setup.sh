#!/usr/bin/env bash
# One-time set-up on a fresh machine: offline datasets + a virtual environment with mk_keras installed.
# Idempotent; `make` calls it whenever pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

# Fashion-MNIST (real data, offline) from the Debian package dataset-fashion-mnist.
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo -n"
    if $SUDO true 2>/dev/null; then
      $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
    else
      echo "note: not root and no passwordless sudo: run 'sudo apt-get install dataset-fashion-mnist' for Fashion-MNIST" >&2
    fi
  else
    echo "note: no apt-get: Fashion-MNIST will be read from the Keras cache or downloaded by keras.datasets" >&2
  fi
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# Animal-MNIST (real data, offline) comes from PyPI as a dependency of mk-keras.
.venv/bin/python -m pip install -q -e ".[test]"
touch .venv/.installed
