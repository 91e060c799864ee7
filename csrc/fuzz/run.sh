#!/usr/bin/env bash
# Build the C core's fuzz targets and run each for SECONDS, one after the
# other (the CI machine has 2 shared cores).  Fails on any crash, sanitizer
# report, memory leak, fd leak (the harnesses check), timeout or OOM.
#
#   csrc/fuzz/run.sh SECONDS
#
# Binaries, logs and the growing corpus go to $FUZZ_WORK (default
# csrc/fuzz/out), so later runs start where earlier ones stopped;
# seeds/TARGET stays as committed.  A failing input is saved as
# $FUZZ_WORK/TARGET-{crash,leak,timeout,oom}-*: add it to seeds/TARGET
# once fixed.
# Replay one: $FUZZ_WORK/fuzz_TARGET FILE
set -euo pipefail
seconds=${1:?usage: run.sh SECONDS}
here=$(cd "$(dirname "$0")" && pwd)
work=$(realpath -m "${FUZZ_WORK:-$here/out}")    # before the cd
cd "$here"

make -s OUT="$work"
failed=()
for target in frame tracker; do
    corpus="$work/corpus-$target"
    mkdir -p "$corpus"
    max_len=512
    [ "$target" = tracker ] && max_len=4096
    echo "=== fuzz_$target for ${seconds}s ==="
    # -timeout: one input taking 10 s is a hang.  The corpus dir comes
    # first so new inputs go there, not into seeds/.
    if ! "$work/fuzz_$target" -max_total_time="$seconds" -timeout=10 \
            -max_len=$max_len -dict=$target.dict -print_final_stats=1 \
            -artifact_prefix="$work/$target-" \
            "$corpus" "seeds/$target" 2>"$work/fuzz_$target.log"; then
        failed+=("$target")
        tail -n 40 "$work/fuzz_$target.log"
    fi
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|^#[0-9]+[[:space:]]+DONE' \
        "$work/fuzz_$target.log" || true
done

if [ ${#failed[@]} -ne 0 ]; then
    echo "FUZZ FAILED: ${failed[*]} (inputs: $work/*-{crash,leak,timeout,oom}-*)"
    exit 1
fi
echo "fuzzing: no findings"
