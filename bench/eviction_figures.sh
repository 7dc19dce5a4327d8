#!/usr/bin/env bash
# The token-eviction figures of docs/BENCHMARKS.md ("Token eviction (issue 6)") in one run.
# Quality figures: deterministic for a given binary and thread count; only the time varies.
#
#   bench/eviction_figures.sh [stream] [sinks20k] [ppl4k] [needle4k] [heatmap]   (default: all)
#
#   stream     slimkv ppl --stream over STREAM_TOKENS tokens, one token per step, per policy and
#              budget (STREAM_GRID entries POLICY@BUDGET, 'full' = no policy), with the full cache
#              at the same window (ppl -c W, non-streaming) as the reference
#   sinks20k   sinks over 20,480 streamed tokens at budgets SINKS_BUDGETS vs ppl -c BUDGET over
#              the same tokens (the stream table takes sinks at these budgets from these runs'
#              running perplexity after STREAM_TOKENS tokens)
#   ppl4k      ppl -c 4096 --step 1 (every scored token sees the evicted cache as a decoding
#              token does), PPL_CHUNKS windows, PPL_POLICIES x budgets 10/25/50% with fp16,
#              PPL_INT4_POLICIES with --kv int4; delta against the full cache in the same format
#   needle4k   needle accuracy at a 4K context, NEEDLE_DEPTHS, NEEDLE_POLICIES x budget
#              fractions (fp16), NEEDLE_INT4_POLICIES at NEEDLE_INT4_FRACTIONS with --kv int4;
#              NEEDLE_PROMPT (needle --prompt: auto, the default, asks a base model plainly)
#   heatmap    depth x context heat maps (1K-8K) to docs/figures/needle_*.svg: the full cache
#              and HEATMAP_GRID entries POLICY@FRACTION
#
# The full grid (issue 14: every policy x format, PPL and KL against the fp16 full cache):
#   KVS="fp16 int4 tq4" FRACTIONS="0.25 0.5" bench/eviction_figures.sh ppl4k needle4k
# With KVS set, every format in it runs PPL_POLICIES / NEEDLE_POLICIES (the *_INT4_* lists are
# not used), ppl4k also reports KL and top-1 agreement against the fp16 full cache (--kl-base
# fp16), and each policy's quality is also given against fp16 with the same policy.
#
# Environment: BIN (default build/bin), MODEL (default smollm2-135m), TEXT (default
# data/pg_essays.txt), THREADS (default 2), LOGDIR (default /tmp/eviction_figures: every run's
# full output), FIGDIR (default docs/figures), and the grid variables below.
# Progress goes to stderr, markdown tables to stdout. A run whose output is already in LOGDIR is
# not repeated, so phases can run in parallel invocations and a rerun only prints the tables;
# TABLES_ONLY=1 prints the tables from what LOGDIR holds without running anything.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/bin}
MODEL=${MODEL:-smollm2-135m}
TEXT=${TEXT:-data/pg_essays.txt}
THREADS=${THREADS:-2}
LOGDIR=${LOGDIR:-/tmp/eviction_figures}
FIGDIR=${FIGDIR:-docs/figures}
PHASES=${*:-stream sinks20k ppl4k needle4k heatmap}

STREAM_TOKENS=${STREAM_TOKENS:-16384}
STREAM_GRID=${STREAM_GRID:-"window@256 sinks@256 h2o@256 tova@256 full knorm@256 expected@256"}
SINKS_TOKENS=${SINKS_TOKENS:-20480}
SINKS_BUDGETS=${SINKS_BUDGETS:-"1024 2048"}
PPL_CTX=${PPL_CTX:-4096}
PPL_CHUNKS=${PPL_CHUNKS:-1}
PPL_POLICIES=${PPL_POLICIES:-"sinks h2o tova knorm expected adakv:h2o"}
PPL_INT4_POLICIES=${PPL_INT4_POLICIES:-"h2o"}
FRACTIONS=${FRACTIONS:-"0.1 0.25 0.5"}
NEEDLE_CTX=${NEEDLE_CTX:-4096}
NEEDLE_DEPTHS=${NEEDLE_DEPTHS:-0,25,50,75,100}
NEEDLE_POLICIES=${NEEDLE_POLICIES:-"snapkv adakv:snapkv h2o tova sinks"}
NEEDLE_INT4_POLICIES=${NEEDLE_INT4_POLICIES:-"snapkv h2o"}
NEEDLE_INT4_FRACTIONS=${NEEDLE_INT4_FRACTIONS:-"0.5"}
NEEDLE_PROMPT=${NEEDLE_PROMPT:-auto}
HEATMAP_CONTEXTS=${HEATMAP_CONTEXTS:-1024,2048,4096,8192}
HEATMAP_DEPTHS=${HEATMAP_DEPTHS:-0,25,50,75,100}
HEATMAP_GRID=${HEATMAP_GRID:-"snapkv@0.5"}
KVS=${KVS:-}

# The formats of the grid, and the policies each runs.
ppl_kvs() { if [[ -n $KVS ]]; then echo "$KVS"; else echo "fp16 int4"; fi; }
ppl_pols() { if [[ -n $KVS || $1 == fp16 ]]; then echo "$PPL_POLICIES"; else echo "$PPL_INT4_POLICIES"; fi; }
needle_pols() { if [[ -n $KVS || $1 == fp16 ]]; then echo "$NEEDLE_POLICIES"; else echo "$NEEDLE_INT4_POLICIES"; fi; }
needle_at() {  # needle_at KV FRACTION: whether that format runs needles at that fraction
  [[ -n $KVS || $1 == fp16 || " $NEEDLE_INT4_FRACTIONS " == *" $2 "* ]]
}
KL=(--kl-base none); [[ -z $KVS ]] || KL=(--kl-base fp16)

mkdir -p "$LOGDIR" "$FIGDIR"
S=("$BIN/slimkv")
desc() { echo "$@" | tr ' ' '\n' | sort -gr | xargs; }  # largest budget first: the 50% column comes first
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

# run NAME ARGS...: runs slimkv with ARGS, output to $LOGDIR/NAME.{out,err}; skips a run whose
# output is already there (delete the log directory to start over).
run() {
  local name=$1; shift
  if [[ -s $LOGDIR/$name.out ]] && grep -q . "$LOGDIR/$name.out"; then
    log "$name: kept from $LOGDIR/$name.out"; return 0
  fi
  if [[ -n ${TABLES_ONLY:-} ]]; then log "$name: missing (TABLES_ONLY)"; return 0; fi
  log "$name: ${S[*]} $*"
  local t0=$SECONDS
  if ! "${S[@]}" "$@" -m "$MODEL" -t "$THREADS" > "$LOGDIR/$name.$$.tmp" 2> "$LOGDIR/$name.$$.err"; then
    log "$name: FAILED (see $LOGDIR/$name.$$.err)"; tail -3 "$LOGDIR/$name.$$.err" >&2; return 0
  fi
  mv "$LOGDIR/$name.$$.err" "$LOGDIR/$name.err"
  mv "$LOGDIR/$name.$$.tmp" "$LOGDIR/$name.out"
  log "$name: done in $((SECONDS - t0)) s: $(grep -m1 -o 'PPL = [0-9.]*\|accuracy [0-9.]*%' "$LOGDIR/$name.out" || true)"
}
safe() { echo "$1" | tr ':@/' '___'; }
ppl_of() { { grep -m1 -o 'PPL = [0-9.]*' "$LOGDIR/$1.out" | cut -d' ' -f3; } 2>/dev/null || true; }
kl_of() { { grep -m1 -o 'mean KL(base || this) = [0-9.]*' "$LOGDIR/$1.out" | grep -o '[0-9.]*$'; } 2>/dev/null || true; }
top1_of() { { grep -m1 -o 'same top-1 [0-9.]*%' "$LOGDIR/$1.out" | grep -o '[0-9.]*%'; } 2>/dev/null || true; }
acc_of() { { grep -m1 -o 'accuracy [0-9.]*%' "$LOGDIR/$1.out" | grep -o '[0-9.]*'; } 2>/dev/null || true; }
# stream_at NAME N: running perplexity after N streamed tokens (the --stream curve on stderr)
stream_at() { { grep -m1 "after $2 tokens" "$LOGDIR/$1.err" | grep -o 'ppl [0-9.]*' | cut -d' ' -f2; } 2>/dev/null || true; }
kvmax_of() { { grep -m1 -o 'at most [0-9.]* [KMG]iB' "$LOGDIR/$1.out" | cut -d' ' -f3-; } 2>/dev/null || true; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "") print "n/a"; else printf "%+.1f%%", 100 * (a / b - 1) }'; }

echo "# slimkv eviction figures: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), model $MODEL, text $TEXT, $THREADS threads"
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

for phase in $PHASES; do
  case $phase in
    stream)
      echo; echo "## stream: ppl --stream --max-tokens $STREAM_TOKENS (one token per step)"
      for e in $STREAM_GRID; do
        if [[ $e == full ]]; then
          run stream_full ppl -f "$TEXT" --stream --max-tokens "$STREAM_TOKENS" -c "$STREAM_TOKENS"
        else
          run "stream_$(safe "$e")" ppl -f "$TEXT" --stream --max-tokens "$STREAM_TOKENS" \
            --kv-policy "${e%@*}" --kv-budget "${e##*@}"
        fi
      done
      budgets=$( (for e in $STREAM_GRID; do [[ $e == full ]] || echo "${e##*@}"; done; echo $SINKS_BUDGETS | tr ' ' '\n') | sort -nu | xargs)
      for b in $budgets; do run "stream_ref_c$b" ppl -f "$TEXT" -c "$b" --chunks $((STREAM_TOKENS / b)) --kl-base none; done
      echo
      # The full cache is compared after 8K tokens (SmolLM2's trained context); past it the full
      # cache is itself out of distribution. The same-window reference is ppl -c BUDGET over the
      # same tokens (the sinks20k reference over 20,480 tokens where only that one was run).
      echo "| policy | budget | ppl after 1K | after 3K | after 8K | after ${STREAM_TOKENS} | after 8K vs full cache after 8K | after ${STREAM_TOKENS} vs full cache -c budget | KV held at most |"
      echo "|---|---|---|---|---|---|---|---|---|"
      full=$(stream_at stream_full 8192)
      if [[ -n $full ]]; then
        echo "| full cache | - | $(stream_at stream_full 1024) | $(stream_at stream_full 3072) | $full | $(ppl_of stream_full) | - | - | $(kvmax_of stream_full) |"
      fi
      for b in $budgets; do
        ref=$(ppl_of "stream_ref_c$b"); refnote=""
        if [[ -z $ref ]]; then ref=$(ppl_of "sinks20k_ref_c$b"); [[ -z $ref ]] || refnote=" (over $SINKS_TOKENS tokens)"; fi
        echo "| full cache, ppl -c $b$refnote | $b | | | | $ref | | - | |"
        if [[ -s $LOGDIR/sinks20k_$b.err && " $STREAM_GRID " != *" sinks@$b "* ]]; then
          p=$(stream_at "sinks20k_$b" "$STREAM_TOKENS")
          echo "| sinks (sinks20k run) | $b | $(stream_at "sinks20k_$b" 1024) | $(stream_at "sinks20k_$b" 3072) | $(stream_at "sinks20k_$b" 8192) | $p | $(pct "$(stream_at "sinks20k_$b" 8192)" "$full") | $(pct "$p" "$ref") | $(kvmax_of "sinks20k_$b") |"
        fi
        for e in $STREAM_GRID; do
          [[ $e != full && ${e##*@} == "$b" ]] || continue
          n="stream_$(safe "$e")"
          [[ -s $LOGDIR/$n.out ]] || continue
          p=$(ppl_of "$n")
          echo "| ${e%@*} | $b | $(stream_at "$n" 1024) | $(stream_at "$n" 3072) | $(stream_at "$n" 8192) | $p | $(pct "$(stream_at "$n" 8192)" "$full") | $(pct "$p" "$ref") | $(kvmax_of "$n") |"
        done
      done
      ;;
    sinks20k)
      echo; echo "## sinks20k: sinks over $SINKS_TOKENS streamed tokens vs the full cache at the same window"
      for b in $SINKS_BUDGETS; do
        run "sinks20k_$b" ppl -f "$TEXT" --stream --max-tokens "$SINKS_TOKENS" --kv-policy sinks --kv-budget "$b"
        run "sinks20k_ref_c$b" ppl -f "$TEXT" -c "$b" --chunks $((SINKS_TOKENS / b)) --kl-base none
      done
      echo
      echo "| budget (window) | sinks, streamed $SINKS_TOKENS tokens | ppl after 4K / 8K / 16K | full cache ppl -c window, same $SINKS_TOKENS tokens | ratio | KV held at most |"
      echo "|---|---|---|---|---|---|"
      for b in $SINKS_BUDGETS; do
        p=$(ppl_of "sinks20k_$b"); r=$(ppl_of "sinks20k_ref_c$b")
        echo "| $b | $p | $(stream_at "sinks20k_$b" 4096) / $(stream_at "sinks20k_$b" 8192) / $(stream_at "sinks20k_$b" 16384) | $r | $(pct "$p" "$r") | $(kvmax_of "sinks20k_$b") |"
      done
      ;;
    ppl4k)
      echo; echo "## ppl4k: ppl -c $PPL_CTX --chunks $PPL_CHUNKS --step 1 (scored: the second half of each window)"
      for kv in $(ppl_kvs); do
        [[ ${PPL_REFS:-1} == 1 ]] || continue  # PPL_REFS=0: a second invocation sharing the grid
        run "ppl4k_${kv}_full" ppl -f "$TEXT" -c "$PPL_CTX" --chunks "$PPL_CHUNKS" --step 1 --kv "$kv" "${KL[@]}"
      done
      for f in $(desc $FRACTIONS); do
        b=$(awk -v c="$PPL_CTX" -v f="$f" 'BEGIN { printf "%d", c * f + 0.5 }')
        for p in $(for kv in $(ppl_kvs); do ppl_pols "$kv"; done | tr ' ' '\n' | awk '!seen[$0]++'); do
          for kv in $(ppl_kvs); do
            [[ " $(ppl_pols "$kv") " == *" $p "* ]] || continue
            run "ppl4k_${kv}_$(safe "$p")_$b" ppl -f "$TEXT" -c "$PPL_CTX" --chunks "$PPL_CHUNKS" --step 1 --kv "$kv" \
              "${KL[@]}" --kv-policy "$p" --kv-budget "$b"
          done
        done
      done
      echo
      hdr="| KV | policy |"; sep="|---|---|"
      for f in $FRACTIONS; do
        b=$(awk -v c="$PPL_CTX" -v f="$f" 'BEGIN { printf "%d", c * f + 0.5 }')
        hdr+=" $(awk -v f="$f" 'BEGIN { printf "%g", 100 * f }')% ($b) |"; sep+="---|"
      done
      echo "$hdr"; echo "$sep"
      base16=$(ppl_of ppl4k_fp16_full)
      for kv in $(ppl_kvs); do
        full=$(ppl_of "ppl4k_${kv}_full")
        cell="$full"
        [[ $kv == fp16 ]] || cell+=" ($(pct "$full" "$base16") vs fp16)"
        echo "| $kv | full cache |$(for f in $FRACTIONS; do printf ' %s |' "$cell"; done)"
        for p in $(ppl_pols "$kv"); do
          row="| $kv | $p |"
          for f in $FRACTIONS; do
            b=$(awk -v c="$PPL_CTX" -v f="$f" 'BEGIN { printf "%d", c * f + 0.5 }')
            n="ppl4k_${kv}_$(safe "$p")_$b"
            if [[ -s $LOGDIR/$n.out ]]; then
              x=$(ppl_of "$n"); row+=" $x ($(pct "$x" "$full")) |"
            else
              row+=" - |"
            fi
          done
          echo "$row"
        done
      done
      if [[ -n $KVS ]]; then
        # Long form: each cell against the fp16 full cache (PPL change, KL, top-1) and, for the
        # other formats, the PPL change against fp16 with the same policy and budget.
        echo
        hdr="| policy | budget |"; sep="|---|---:|"
        for kv in $KVS; do
          hdr+=" $kv PPL | vs fp16 full | KL | top-1 |"; sep+="---:|---:|---:|---:|"
          [[ $kv == fp16 ]] || { hdr+=" vs fp16 + policy |"; sep+="---:|"; }
        done
        echo "$hdr"; echo "$sep"
        for p in full $PPL_POLICIES; do
          for f in $(desc $FRACTIONS); do
            b=$(awk -v c="$PPL_CTX" -v f="$f" 'BEGIN { printf "%d", c * f + 0.5 }')
            if [[ $p == full ]]; then suffix=full; bcol="$PPL_CTX"; else suffix="$(safe "$p")_$b"; bcol="$b ($(awk -v f="$f" 'BEGIN { printf "%g", 100 * f }')%)"; fi
            row="| ${p/full/full cache} | $bcol |"
            ref=$(ppl_of "ppl4k_fp16_$suffix")
            for kv in $KVS; do
              n="ppl4k_${kv}_$suffix"; x=$(ppl_of "$n")
              if [[ -n $x ]]; then
                row+=" $x | $(pct "$x" "$base16") | $(kl_of "$n") | $(top1_of "$n") |"
              else
                row+=" - | | | |"
              fi
              [[ $kv == fp16 ]] || row+=" $(pct "$x" "$ref") |"
            done
            echo "$row"
            [[ $p == full ]] && break
          done
        done
      fi
      ;;
    needle4k)
      echo; echo "## needle4k: needle --contexts $NEEDLE_CTX --depths $NEEDLE_DEPTHS --prompt $NEEDLE_PROMPT"
      for kv in $(ppl_kvs); do
        run "needle4k_${kv}_full" needle --contexts "$NEEDLE_CTX" --depths "$NEEDLE_DEPTHS" --kv "$kv" --outputs \
          --prompt "$NEEDLE_PROMPT"
      done
      for f in $(desc $FRACTIONS); do
        for kv in $(ppl_kvs); do
          needle_at "$kv" "$f" || continue
          for p in $(needle_pols "$kv"); do
            run "needle4k_${kv}_$(safe "$p")_$f" needle --contexts "$NEEDLE_CTX" --depths "$NEEDLE_DEPTHS" --kv "$kv" \
              --kv-policy "$p" --budget-fraction "$f" --outputs --prompt "$NEEDLE_PROMPT"
          done
        done
      done
      echo
      hdr="| KV | policy |"; sep="|---|---|"
      for f in $FRACTIONS; do hdr+=" $(awk -v f="$f" 'BEGIN { printf "%g", 100 * f }')% |"; sep+="---|"; done
      [[ -z $KVS ]] || { hdr+=" of the full cache's (50%) |"; sep+="---|"; }
      echo "$hdr"; echo "$sep"
      for kv in $(ppl_kvs); do
        a=$(acc_of "needle4k_${kv}_full")
        echo "| $kv | full cache |$(for f in $FRACTIONS; do printf ' %s%% |' "$a"; done)$([[ -z $KVS ]] || echo ' |')"
        for p in $(needle_pols "$kv"); do
          row="| $kv | $p |"
          for f in $FRACTIONS; do
            n="needle4k_${kv}_$(safe "$p")_$f"
            if [[ -s $LOGDIR/$n.out ]]; then row+=" $(acc_of "$n")% |"; else row+=" - |"; fi
          done
          if [[ -n $KVS ]]; then
            x=$(acc_of "needle4k_${kv}_$(safe "$p")_0.5")
            row+=" $(awk -v x="$x" -v a="$a" 'BEGIN { if (x == "" || a == "" || a == 0) print "n/a"; else printf "%.0f%%", 100 * x / a }') |"
          fi
          echo "$row"
        done
      done
      ;;
    heatmap)
      echo; echo "## heatmap: needle --contexts $HEATMAP_CONTEXTS --depths $HEATMAP_DEPTHS"
      run heatmap_full needle --contexts "$HEATMAP_CONTEXTS" --depths "$HEATMAP_DEPTHS" --outputs \
        --svg "$FIGDIR/needle_full.svg"
      for e in $HEATMAP_GRID; do
        p=${e%@*}; f=${e##*@}
        name="needle_$(safe "$p")_$(awk -v f="$f" 'BEGIN { printf "%g", 100 * f }')"
        run "heatmap_$name" needle --contexts "$HEATMAP_CONTEXTS" --depths "$HEATMAP_DEPTHS" --outputs \
          --kv-policy "$p" --budget-fraction "$f" --svg "$FIGDIR/$name.svg"
      done
      for n in heatmap_full $(for e in $HEATMAP_GRID; do p=${e%@*}; f=${e##*@}; echo "heatmap_needle_$(safe "$p")_$(awk -v f="$f" 'BEGIN { printf "%g", 100 * f }')"; done); do
        [[ -s $LOGDIR/$n.out ]] || continue
        echo; sed -n '1p' "$LOGDIR/$n.out"; echo
        sed -n '/^| depth/,/^accuracy/p' "$LOGDIR/$n.out"
      done
      ;;
    *) echo "unknown phase '$phase' (stream sinks20k ppl4k needle4k heatmap)" >&2; exit 2 ;;
  esac
done
