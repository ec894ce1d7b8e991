#!/bin/sh
# The version lives in one place, the EVLOOP_VERSION_* macros of evloop.h;
# everything that states it must agree:
#   sh tests/version_check.sh BUILD     (BUILD/evloop.pc made by make)
# Prints "ok   NAME" or "FAIL NAME" per check, then
# "N passed, N failed, 0 skipped".
build=${1:?usage: sh tests/version_check.sh BUILD}
. tests/check_lib.sh


macro() { # the value of #define EVLOOP_VERSION_$1
  sed -n "s/^#define EVLOOP_VERSION_$1 \\(.*\\)\$/\\1/p" evloop.h
}
v="$(macro MAJOR).$(macro MINOR).$(macro PATCH)"
echo "$v" | grep -Eq '^[0-9]+\.[0-9]+\.[0-9]+$'
check "EVLOOP_VERSION_MAJOR/MINOR/PATCH are numbers ($v)" $? \
  "got '$v' from evloop.h"

s=$(macro STRING)
[ "$s" = "\"$v\"" ]
check "EVLOOP_VERSION_STRING is \"$v\"" $? "EVLOOP_VERSION_STRING is $s"

first=$(head -n 1 evloop.h)
case $first in *" - v$v - "*) r=0 ;; *) r=1 ;; esac
check "the header's first line says v$v" $r "$first"

# README: "Version X.Y.Z" at least once, and never another one.
all=$(grep -o 'Version [0-9][0-9.]*[0-9]' README.md | sort -u)
[ "$all" = "Version $v" ]
check "README.md says Version $v" $? "README.md has: $(echo $all)"

pc=$(sed -n 's/^Version: *//p' "$build/evloop.pc" 2>/dev/null)
[ "$pc" = "$v" ]
check "evloop.pc says Version: $v" $? "$build/evloop.pc has: '$pc'"

summary
