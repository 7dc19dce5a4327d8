#!/usr/bin/env bash
# The needle's progress line counts the cell it reports: "found F/N" with N the cells done
# (it printed "found 1/0" after the first cell: the count was incremented inside the call's
# argument list, which has no order). Progress is drawn on a terminal, so `script` gives
# the command one. About 5 s.
set -u
BIN=${SLIMKV_BIN:?set SLIMKV_BIN to the slimkv binary}
SRC=${SLIMKV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
export SLIMKV_MODEL_DIR=${SLIMKV_MODEL_DIR:-$SRC/models}
cd "$SRC"
if ! command -v script > /dev/null; then echo "FAIL: script (util-linux) not found"; exit 1; fi
out=$(script -qec "$BIN needle --contexts 512 --depths 0,100" /dev/null 2>&1 | tr '\r' '\n')
lines=$(grep -o "found [0-9]*/[0-9]*" <<< "$out")
[[ -n $lines ]] || { echo "FAIL: no progress line: $out"; exit 1; }
while read -r line; do
  f=${line#found }; found=${f%/*}; done_=${f#*/}
  if ((done_ < 1 || found > done_)); then echo "FAIL: progress says '$line'"; exit 1; fi
done <<< "$lines"
grep -q "found [0-9]/2" <<< "$lines" || { echo "FAIL: the last cell is not counted: $lines"; exit 1; }
echo "needle progress: $(tail -1 <<< "$lines")"
