#!/usr/bin/env bash
# fuzz/build.sh [NAME...] — build every fuzz/fuzz_*.c (or just the named ones)
# as a libFuzzer binary with ASan + UBSan into fuzz/out/<name>.
#
# A harness names what it links on its first line:
#     // srcs: src/core/json.c src/core/sse.c -lyaml
# src files are compiled with the project's warnings; words starting with
# '-' are passed to the linker.
set -euo pipefail
cd "$(dirname "$0")/.."

CC=${FUZZ_CC:-clang}
OUT=fuzz/out
OBJ=$OUT/obj

# every folder of src/ is on the include path, as in the Makefile
INCS=(-Isrc); for d in src/*/; do INCS+=("-I${d%/}"); done
SAN=(-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
BASE=(-std=c17 -D_GNU_SOURCE "-DSHADE_VERSION=\"fuzz\"" "${INCS[@]}" -g -O1 -pthread)
WARN=(-Wall -Wextra -Werror -Wshadow -Wpointer-arith -Wstrict-prototypes -Wmissing-prototypes
      -Wformat=2 -Wvla -Wno-unused-parameter)

command -v "$CC" >/dev/null || { echo "fuzz/build.sh: $CC not found" >&2; exit 1; }
mkdir -p "$OBJ"

# harnesses to build
harnesses=()
if [ $# -gt 0 ]; then
    for name in "$@"; do
        name=${name%.c}; name=${name##*/}
        [ -f "fuzz/$name.c" ] || { echo "fuzz/build.sh: no fuzz/$name.c" >&2; exit 1; }
        harnesses+=("fuzz/$name.c")
    done
else
    shopt -s nullglob
    harnesses=(fuzz/fuzz_*.c)
    shopt -u nullglob
fi
[ ${#harnesses[@]} -gt 0 ] || { echo "fuzz/build.sh: no fuzz/fuzz_*.c" >&2; exit 1; }

declare -A built=() # source -> object, each compiled once per run

# compile SRC [warnings...]; sets $obj to the object's path
compile() {
    local src=$1; shift
    obj="$OBJ/$(echo "${src#/}" | tr '/' '_').o"
    if [ -z "${built[$src]:-}" ]; then
        "$CC" "${SAN[@]}" "${BASE[@]}" "$@" -c "$src" -o "$obj"
        built[$src]=$obj
    fi
}

for h in "${harnesses[@]}"; do
    name=$(basename "$h" .c)
    line=$(head -n 1 "$h")
    srcs=""
    if [[ $line =~ ^//[[:space:]]*srcs:(.*)$ ]]; then srcs=${BASH_REMATCH[1]}; fi
    objs=() libs=()
    for w in $srcs; do
        case $w in
        -*)
            libs+=("$w") ;;
        *.c)
            [ -f "$w" ] || { echo "fuzz/build.sh: $h needs $w, which does not exist" >&2; exit 1; }
            compile "$w" "${WARN[@]}"; objs+=("$obj") ;;
        *)
            echo "fuzz/build.sh: $h: don't know what '$w' is" >&2; exit 1 ;;
        esac
    done
    echo "fuzz/build.sh: $name <- $h ${objs[*]:-} ${libs[*]:-}"
    # LLVMFuzzerTestOneInput has no header to declare it: no -Wmissing-prototypes
    "$CC" "${SAN[@]}" "${BASE[@]}" "${WARN[@]}" -Wno-missing-prototypes "$h" ${objs[@]+"${objs[@]}"} \
        -o "$OUT/$name" ${libs[@]+"${libs[@]}"} -lm
done
