#!/usr/bin/env bash
# CI's manifest step: render every kustomization under deploy/ (the base and each overlay) with
# `kubectl kustomize`, validate every built-in object against the Kubernetes schemas with
# kubernetes-validate (pinned; it ships the schemas, so no network) for the oldest and newest
# supported versions, check what schemas cannot (scripts/check_manifests.py: custom resources,
# selectors, ports, the Argo CD Application), then run `ollyscale-pooler --check` on the
# pgbouncer.ini of each rendered ConfigMap.
#
#   PYTHON=path/to/venv/python  a venv with kubernetes-validate==$KV_VERSION (test.sh passes its own)
#   POOLER_BIN=path             the binary for --check (default: cargo build, debug)
set -euo pipefail
cd "$(dirname "$0")/.."

KV_VERSION=1.37.0
K8S_VERSIONS=(1.29.0 1.37.0)
die() { printf 'check-deploy: %s\n' "$*" >&2; exit 1; }

command -v kubectl >/dev/null 2>&1 || die "kubectl not found (kubectl kustomize renders the manifests)"
python=${PYTHON:-}
if [ -z "$python" ]; then
    python=target/pyenv/bin/python
    [ -x "$python" ] || /usr/bin/python3 -m venv target/pyenv
fi
"$python" -c "import importlib.metadata as m, sys; sys.exit(m.version('kubernetes-validate') != '$KV_VERSION')" 2>/dev/null \
    || "$python" -m pip install --disable-pip-version-check -q "kubernetes-validate==$KV_VERSION"
kv=("$python" -m kubernetes_validate)

bin=${POOLER_BIN:-}
if [ -z "$bin" ]; then
    cargo build --quiet --bin ollyscale-pooler
    bin=target/debug/ollyscale-pooler
fi

out=$(mktemp -d "${TMPDIR:-/tmp}/ollyscale-deploy.XXXXXX")
trap 'rm -rf "$out"' EXIT
status=0
for k in deploy/base deploy/overlays/*; do
    [ -f "$k/kustomization.yaml" ] || continue
    name=$(echo "$k" | tr '/' '-')
    rendered="$out/$name.yaml"
    kubectl kustomize "$k" > "$rendered" || die "kubectl kustomize $k failed"
    echo "$k: $(grep -c '^kind:' "$rendered") objects rendered"
    for v in "${K8S_VERSIONS[@]}"; do
        # --strict: unknown fields are errors. Custom resources have no schema here (they would
        # only warn): check_manifests.py checks them.
        "${kv[@]}" --strict --quiet --no-warn -k "$v" "$rendered" || { echo "$k: invalid for Kubernetes $v" >&2; status=1; }
    done
    extra=()
    if [ "$k" = deploy/overlays/ollyscale ]; then
        extra=(--expect-namespace ollyscale --expect-service ollyscale-db-pooler
            --application deploy/argocd/ollyscale-db-pooler.yaml)
    fi
    "$python" scripts/check_manifests.py "$rendered" --ini-out "$out/$name.ini" "${extra[@]}" || status=1
    if [ -f "$out/$name.ini" ]; then
        # The ini names /run/ollyscale-pooler/userlist.txt, which the init container writes in the
        # pod; check against an empty stand-in so the rest of the file is checked here.
        : > "$out/userlist.txt"
        sed "s#^auth_file = .*#auth_file = $out/userlist.txt#" "$out/$name.ini" > "$out/$name.check.ini"
        printf '%s: ' "$k"
        "$bin" --check "$out/$name.check.ini" 2> "$out/$name.check.err" || { status=1; echo FAILED; }
        # Warnings (keys not implemented yet) and errors, with the ini's own name.
        sed "s#$out/$name.check.ini#$k/pgbouncer.ini (rendered)#" "$out/$name.check.err" >&2
    fi
done
exit "$status"
