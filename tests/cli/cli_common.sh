# Sourced by the command-line tests (tests/cli/*_test.sh): the binary, the paths, a scratch
# directory and the failure report they share. Sets BIN, SRC, DATA, SLIMKV_MODEL_DIR, TMP,
# OUT, ERR, n_failed, start; fail NAME reports a failure with the last command's output.
#   source "$(dirname "$0")/cli_common.sh" NAME   (NAME names the scratch directory)
set -u

BIN=${SLIMKV_BIN:?set SLIMKV_BIN to the slimkv binary}
SRC=${SLIMKV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
DATA=${SLIMKV_DATA_DIR:-$SRC/data}
export SLIMKV_MODEL_DIR=${SLIMKV_MODEL_DIR:-$SRC/models}
if [[ ! -x $BIN ]]; then echo "FAIL: slimkv binary '$BIN' not found"; exit 1; fi
if [[ ! -f $SLIMKV_MODEL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf ]]; then
  echo "FAIL: default model not found in $SLIMKV_MODEL_DIR (run make models)"
  exit 1
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/slimkv_$1.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
OUT=$TMP/out.txt
ERR=$TMP/err.txt
n_failed=0
start=$SECONDS

fail() {
  n_failed=$((n_failed + 1))
  echo "FAIL $1"
  echo "    stdout: $(head -c 1500 "$OUT")"
  echo "    stderr: $(head -c 1500 "$ERR")"
}
