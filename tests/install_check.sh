#!/bin/sh
# make install into a temporary DESTDIR, then build and run an example
# against the installed header through pkg-config; make uninstall removes
# what install put there:
#   sh tests/install_check.sh BUILD
# Needs pkg-config (else one skip, with the package). Prints "ok   NAME" or
# "FAIL NAME" per check, then "N passed, N failed, K skipped".
build=${1:?usage: sh tests/install_check.sh BUILD}
make=${MAKE:-make}
cc=${CC:-cc}
. tests/check_lib.sh
if ! command -v pkg-config >/dev/null 2>&1; then
  echo "skipped: make install checked through pkg-config (apt-get install pkg-config)"
  skipped=1
  summary
  exit
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/evl_install.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
dest=$tmp/root prefix=/opt/evl-test


$make -s install PREFIX=$prefix DESTDIR="$dest" BUILD="$build" >"$tmp/log" 2>&1
st=$?
files=$(cd "$dest" 2>/dev/null && find . -type f | sort | tr '\n' ' ')
want="./opt/evl-test/include/evloop.h ./opt/evl-test/lib/pkgconfig/evloop.pc "
[ $st -eq 0 ] && [ "$files" = "$want" ] && cmp -s evloop.h "$dest$prefix/include/evloop.h"
check "make install PREFIX=$prefix DESTDIR=... puts evloop.h and evloop.pc there" $? \
  "make status $st; installed: $files" "$tmp/log"

# pkg-config as a user of the staged tree would call it.
PKG_CONFIG_PATH=$dest$prefix/lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$dest
PKG_CONFIG_LIBDIR=$dest$prefix/lib/pkgconfig
export PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_LIBDIR
flags=$(pkg-config --cflags --libs evloop 2>"$tmp/err")
st=$?
case " $flags " in
*" -I$dest$prefix/include "*"-lpthread "*) r=$st ;;
*) r=1 ;;
esac
check "pkg-config --cflags --libs evloop gives -I<include> -lpthread" $r \
  "pkg-config status $st: '$flags'" "$tmp/err"

v="$(sed -n 's/^#define EVLOOP_VERSION_STRING "\(.*\)"$/\1/p' evloop.h)"
mv=$(pkg-config --modversion evloop 2>&1)
[ "$mv" = "$v" ]
check "pkg-config --modversion evloop is $v" $? "got '$mv'"

# examples/hello_world.c with <evloop.h> instead of "../evloop.h", built
# in the temporary directory: only the installed header can be found.
sed 's|^#include "\.\./evloop\.h"$|#include <evloop.h>|' examples/hello_world.c >"$tmp/hello.c"
# shellcheck disable=SC2086
grep -q '^#include <evloop.h>$' "$tmp/hello.c" &&
  (cd "$tmp" && $cc -std=c99 -Wall -Wextra -Wpedantic -Werror -MD hello.c -o hello $flags) \
    >"$tmp/err" 2>&1 &&
  grep -q "$dest$prefix/include/evloop.h" "$tmp/hello.d"
check "examples/hello_world.c builds with \`pkg-config --cflags --libs evloop\`" $? "$tmp/err"

out=$("$tmp/hello" 2>&1)
[ "$out" = "Hello World" ]
check "that build runs and prints Hello World" $? "$out"

$make -s uninstall PREFIX=$prefix DESTDIR="$dest" BUILD="$build" >"$tmp/log" 2>&1
st=$?
left=$(cd "$dest" && find . -type f | tr '\n' ' ')
[ $st -eq 0 ] && [ -z "$left" ]
check "make uninstall removes both files" $? \
  "make status $st; left: $left" "$tmp/log"

summary
