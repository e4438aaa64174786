#!/usr/bin/env bash
# fuzz/run.sh [SECONDS] [NAME...] — build, then run each harness (default: all
# fuzz/fuzz_*.c) for SECONDS (default 10) starting from its committed seed
# corpus fuzz/corpus/<name>/.  The corpus is copied to a scratch directory so
# the committed one stays as it is.  Crash inputs land in
# fuzz/out/artifacts/<name>/.  Exits non-zero if any harness fails.
#
# Extra libFuzzer flags can be given in FUZZ_FLAGS (e.g. FUZZ_FLAGS=-jobs=2).
set -uo pipefail
# a smaller quarantine keeps RSS sane for harnesses that malloc per feed
export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=64}
cd "$(dirname "$0")/.."

secs=${1:-10}
[ $# -gt 0 ] && shift
case $secs in ''|*[!0-9]*) echo "usage: fuzz/run.sh [SECONDS] [NAME...]" >&2; exit 2 ;; esac

fuzz/build.sh "$@" || { echo "fuzz/run.sh: build failed" >&2; exit 1; }

names=()
if [ $# -gt 0 ]; then
    for n in "$@"; do n=${n%.c}; names+=("${n##*/}"); done
else
    for h in fuzz/fuzz_*.c; do names+=("$(basename "$h" .c)"); done
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/shade-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

failed=()
for name in "${names[@]}"; do
    bin=fuzz/out/$name
    corpus=$work/$name
    art=fuzz/out/artifacts/$name/
    mkdir -p "$corpus" "$art"
    if [ -d "fuzz/corpus/$name" ]; then cp -R "fuzz/corpus/$name/." "$corpus/"; fi
    dict=()
    [ -f "fuzz/$name.dict" ] && dict=("-dict=fuzz/$name.dict")
    echo "== $name: ${secs}s, seeds: $(ls "$corpus" | wc -l)"
    # shellcheck disable=SC2086
    "$bin" -max_total_time="$secs" -timeout=25 -print_final_stats=1 -artifact_prefix="$art" \
        ${dict[@]+"${dict[@]}"} ${FUZZ_FLAGS:-} "$corpus" >"$work/$name.log" 2>&1
    rc=$?
    if [ $rc -ne 0 ]; then
        failed+=("$name")
        echo "!! $name FAILED (exit $rc); last lines of its log:"
        tail -n 40 "$work/$name.log"
        ls -l "$art" 2>/dev/null | tail -n +2
    else
        grep -E '^#[0-9]+.*(DONE|pulse)' "$work/$name.log" | tail -n 1
        grep -E 'stat::number_of_executed_units|stat::peak_rss_mb' "$work/$name.log" | tr '\n' ' '
        echo
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz/run.sh: FAILED: ${failed[*]}"
    exit 1
fi
echo "fuzz/run.sh: all ${#names[@]} harnesses ran ${secs}s without a crash"
