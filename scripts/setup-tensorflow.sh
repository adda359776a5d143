#!/usr/bin/env bash
# Creates the virtual environment the `tensorflow` replay engine runs in: .venv-tensorflow
# (relative to the current directory, normally the repository root) with tensorflow-cpu from
# the Python package index. topolab finds it there, or uses the Python in TOPOLAB_TF_PYTHON.
#   bash scripts/setup-tensorflow.sh
set -euo pipefail
VERSION=${TENSORFLOW_VERSION:-2.21.0}
VENV=${1:-.venv-tensorflow}
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import tensorflow as tf; assert tf.__version__ == '$VERSION'" 2>/dev/null; then
  echo "tensorflow-cpu $VERSION is already installed in $VENV"
  exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "tensorflow-cpu==$VERSION"
"$VENV/bin/python" -c "import tensorflow as tf; print('tensorflow-cpu', tf.__version__, 'installed in $VENV')" 2>/dev/null
