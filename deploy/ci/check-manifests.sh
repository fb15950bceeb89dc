#!/usr/bin/env bash
# The Kubernetes manifests against the Kubernetes JSON schemas (strict:
# unknown fields fail), offline with the schemas kubernetes-validate ships,
# for the oldest and newest API versions we claim; then the security and
# wiring lint (deploy/ci/k8s_lint.py), with its self-test.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${WIRESPEED_CI_VENV:-/opt/wirespeed-ci}
dir=deploy/kubernetes

resources=$("$venv/bin/python" -c '
import sys, yaml
print(" ".join(yaml.safe_load(open(sys.argv[1]))["resources"]))' "$dir/kustomization.yaml")
for v in 1.30.0 1.37.0; do
    (cd "$dir" && "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" $resources)
    echo "check-manifests: $resources valid against Kubernetes $v"
done
"$venv/bin/python" deploy/ci/k8s_lint.py --self-test "$dir"
