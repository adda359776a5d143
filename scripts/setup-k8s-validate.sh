#!/usr/bin/env bash
# Creates .venv-tools with kubernetes-validate (from the Python package index), which checks
# the manifests of `topolab k8s manifests` offline against the Kubernetes OpenAPI schemas:
#   bash scripts/setup-k8s-validate.sh
#   .venv-tools/bin/kubernetes-validate --strict -k 1.33 k8s/tiny/job.yaml
set -euo pipefail
VERSION=${KUBERNETES_VALIDATE_VERSION:-1.37.0}
VENV=${1:-.venv-tools}
if [ -x "$VENV/bin/kubernetes-validate" ] && "$VENV/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$VERSION"; then
  echo "kubernetes-validate $VERSION is already installed in $VENV"
  exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$VERSION"
echo "kubernetes-validate $VERSION installed in $VENV"
