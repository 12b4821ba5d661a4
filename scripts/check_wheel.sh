#!/usr/bin/env bash
# Build the wheel and check a non-editable install in a brand-new environment (.venv-wheel):
# the .pth hook must ship in the wheel, anomalib's unmodified CLI must resolve our plugins and
# every registered plugin must import. Run from outside the source tree so nothing is imported
# from the checkout by accident.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
VENV=$REPO/.venv-wheel
rm -rf "$VENV" "$REPO/dist"
python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip "setuptools>=70" wheel
"${PIP[@]}" wheel -q --no-deps -w "$REPO/dist" "$REPO"
wheel=$(ls "$REPO"/dist/anomalib_3d-*.whl)
echo "[wheel] built $(basename "$wheel")"
"$VENV/bin/python" - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
assert "anomalib_3d_plugins_hook.pth" in names, "the .pth plugin hook is missing from the wheel"
assert any(n.startswith("anomalib_3d_plugins/imrnet/") for n in names), "plugins missing from the wheel"
PY
"${PIP[@]}" install -q torch torchvision
"${PIP[@]}" install -q "$wheel"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$VENV/bin/python" - <<'PY'
import anomalib_3d
assert "site-packages" in anomalib_3d.__file__, f"imported from the source tree: {anomalib_3d.__file__}"
plugins = anomalib_3d.list_plugins()
bad = [f"{p.kind}:{p.name} {p.status} {p.error or ''}" for p in plugins if p.status != "loaded"]
assert not bad, "plugins that did not load from the wheel:\n" + "\n".join(bad)
print("[wheel] plugins loaded:", ", ".join(sorted(p.name for p in plugins)))
PY
mkdir -p r3d/part/train
"$VENV/bin/anomalib" fit --model IMRNet --data Real3DAD --data.root "$work/r3d" --data.category part --print_config > config.yaml
grep -q "anomalib_3d_plugins.imrnet.lightning_model.IMRNet\|anomalib_3d_plugins.imrnet.IMRNet" config.yaml \
  || { echo "[wheel] anomalib's CLI did not resolve --model IMRNet:"; cat config.yaml; exit 1; }
grep -q "Real3DAD" config.yaml || { echo "[wheel] anomalib's CLI did not resolve --data Real3DAD"; exit 1; }
echo "[wheel] ok: non-editable install resolves --model IMRNet --data Real3DAD through anomalib's CLI"
