#!/bin/bash
# The embedding test: install the build into a scratch prefix, build
# tests/embed/embed.c outside the tree from the installed headers and .pc
# files only (pkg-config, shared and static), and run each with a real
# client (slixmpp) logging in: the shared build under valgrind, the
# static one under ASan and UBSan. Prints TAP.
#
# usage: run.sh BUILDDIR SRCDIR
set -u
build=$1 src=$2
py=/usr/bin/python3
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill -9 $pid 2>/dev/null; rm -rf "$tmp"' EXIT
n=0 failed=0
check() {
  n=$((n + 1))
  if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else
    echo "not ok $n - $2"; failed=$((failed + 1))
    [ -n "${3:-}" ] && echo "$3" | tail -n 30 | sed 's/^/# /'; fi
}
echo "1..6"

out=$(meson install -C "$build" --destdir "$tmp/root" --no-rebuild 2>&1)
check $? "meson install into a scratch prefix" "$out"
pcdir=$(dirname "$(find "$tmp/root" -name libxcm.pc | head -1)")
prefix=$(PKG_CONFIG_PATH=$pcdir pkg-config --variable=prefix libxcm)
# The .pc files name the real prefix; point it at the scratch copy.
pc() {
  PKG_CONFIG_PATH=$pcdir pkg-config --define-variable=prefix="$tmp/root$prefix" "$@"
}
libdir=$(pc --variable=libdir libxcm)
cp "$src/tests/embed/embed.c" "$tmp/"
cd "$tmp" || exit 1

cflags="-std=c11 -D_POSIX_C_SOURCE=200112L -pedantic -Wall -Wextra -Werror -g"
# shellcheck disable=SC2046,SC2086
out=$(cc $cflags $(pc --cflags libxcm-testkit libxcm) embed.c -o embed-shared \
  $(pc --libs libxcm-testkit libxcm) -Wl,-rpath,"$libdir" 2>&1)
check $? "built with pkg-config --cflags --libs (shared)" "$out"

# Static: the libraries' archives, and what pkg-config --static says
# they need.
libs=$(pc --static --libs libxcm-testkit libxcm |
  sed -e 's/-lxcm-testkit\b/-l:libxcm-testkit.a/' -e 's/-lxcm\b/-l:libxcm.a/g')
# shellcheck disable=SC2046,SC2086
out=$(cc $cflags -fsanitize=address,undefined -fno-sanitize-recover=all \
  $(pc --cflags libxcm-testkit libxcm) embed.c -o embed-static $libs 2>&1)
check $? "built with pkg-config --static (static, ASan/UBSan)" "$out"
! ldd ./embed-static | grep -q libxcm
check $? "the static build needs no libxcm*.so" "$(ldd ./embed-static)"

# run NAME CMD...: start the program, log slixmpp in through it, stop it.
run() {
  local name=$1 port rc watcher
  shift
  mkfifo "$name.fifo"
  # Held open both ways, so that no open of it blocks; a program that
  # dies before writing its port is answered with an empty line.
  exec 3<>"$name.fifo"
  "$@" "$name.fifo" >"$name.out" 2>&1 &
  pid=$!
  (while kill -0 $pid 2>/dev/null; do sleep 0.2; done; echo >&3) \
    >/dev/null 2>&1 &
  watcher=$!
  read -r port <&3
  if [ -n "$port" ]; then
    out=$($py "$src/tests/e2e/slix_chat.py" --port "$port" --tls none \
      --domain example.test 2>&1)
    rc=$?
    kill -TERM $pid
  else
    out="the program did not start" rc=1
  fi
  wait $pid || rc=1
  pid=
  kill $watcher 2>/dev/null
  wait $watcher 2>/dev/null
  exec 3>&-
  ! grep -q '^not ok' "$name.out" || rc=1
  check $rc "$name: a client logs in, chats, everything is freed" \
    "$(cat "$name.out"; echo "$out" | grep -v '^ok')"
}
run shared-valgrind valgrind --error-exitcode=99 --leak-check=full \
  --errors-for-leak-kinds=definite,indirect -q "$tmp/embed-shared"
run static-asan "$tmp/embed-static"
exit $((failed > 0))
