#!/bin/bash
# Every public header compiles alone, as C99, C11 and C17 with -pedantic
# (with the POSIX feature macro xcm.h asks for) and as C++17; and without
# the macro, a strict C build stops with xcm.h's own message rather than
# deep inside uv.h. Prints TAP.
#
# usage: headers.sh SRCDIR CC CXX
set -u
src=$1 cc=$2 cxx=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
headers=("$src"/include/xcm/*.h)
n=0 failed=0
echo "1..$((${#headers[@]} * 4 + 1))"
check() {
  n=$((n + 1))
  if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else
    echo "not ok $n - $2"; failed=$((failed + 1)); echo "$3" | sed 's/^/# /'; fi
}
warn=(-pedantic -Werror -Wall -Wextra)
for h in "${headers[@]}"; do
  name=xcm/$(basename "$h")
  # One declaration of the test's own, so that a header that declares
  # nothing by itself (export.h) is not an empty translation unit.
  printf '#include "%s"\ntypedef int xcm_test_unit;\n' "$name" >"$tmp/t.c"
  cp "$tmp/t.c" "$tmp/t.cc"
  for std in c99 c11 c17; do
    out=$("$cc" -std=$std -D_POSIX_C_SOURCE=200112L "${warn[@]}" \
      -fsyntax-only -I"$src/include" "$tmp/t.c" 2>&1)
    check $? "$name alone, -std=$std -pedantic" "$out"
  done
  out=$("$cxx" -std=c++17 "${warn[@]}" -fsyntax-only -I"$src/include" \
    "$tmp/t.cc" 2>&1)
  check $? "$name alone, -std=c++17 -pedantic" "$out"
done
printf '#include "xcm/xcm.h"\n' >"$tmp/t.c"
out=$("$cc" -std=c11 -pedantic -fsyntax-only -I"$src/include" "$tmp/t.c" 2>&1)
[ $? -ne 0 ] && echo "$out" | grep -q 'needs POSIX: compile with -D_POSIX_C_SOURCE'
check $? "without a feature macro, xcm.h says which one to add" "$out"
exit $((failed > 0))
