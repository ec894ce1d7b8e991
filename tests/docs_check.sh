#!/bin/sh
# The header's first screens and the README against the code:
#   sh tests/docs_check.sh [BUILD]
# - every EVLOOP_* macro evloop.h lets a user set (it tests it with #if,
#   #ifdef, #ifndef or defined()) is in the header's CONFIGURATION MACROS
#   chapter and in README.md's "Configuration macros" table;
# - every evl_/EVL_ name of the header's API AT A GLANCE chapter is
#   declared further down;
# - the README's apt-get line names the packages .ci/run installs.
# Prints "ok   NAME" or "FAIL NAME" per check, then
# "N passed, N failed, 0 skipped".
. tests/check_lib.sh

# The chapter of the top comment that starts with heading $1 (up to the
# next numbered heading).
chapter() {
  awk -v h="$1" 'index($0, h) { f = 1; print; next }
    f && /^   [0-9]+\. [A-Z]/ { exit } f' evloop.h
}
settable=$(grep -E '^[[:space:]]*#[[:space:]]*(if|ifdef|ifndef|elif)' evloop.h |
  grep -oE 'EVLOOP_[A-Z0-9_]+' | sort -u |
  grep -vxE 'EVLOOP_(H_INCLUDED|IMPLEMENTATION_DONE)')
config=$(chapter "CONFIGURATION MACROS")
table=$(sed -n '/^## Configuration macros/,/^## /p' README.md)
miss_h="" miss_r=""
for m in $settable; do
  # EVLOOP_BACKEND_X may be written as a row of its own or, in the README,
  # as `EVLOOP_BACKEND_SELECT` / `_POLL` / ...
  short=_${m#EVLOOP_BACKEND_}
  printf '%s\n' "$config" | grep -q "$m" || miss_h="$miss_h $m"
  printf '%s\n' "$table" | grep -q "$m" ||
    { [ "$short" != "_$m" ] && printf '%s\n' "$table" | grep -q "\`$short\`"; } ||
    miss_r="$miss_r $m"
done
[ -n "$settable" ] && [ -z "$miss_h" ]
check "the header's configuration chapter lists every settable EVLOOP_* macro" $? \
  "missing:$miss_h"
[ -n "$settable" ] && [ -z "$miss_r" ]
check "README.md's configuration table lists every settable EVLOOP_* macro" $? \
  "missing:$miss_r"

glance=$(chapter "API AT A GLANCE")
decls=$(sed -n '/^#ifndef EVLOOP_H_INCLUDED/,$p' evloop.h)
bad=""
for n in $(printf '%s\n' "$glance" | grep -oE '\b(evl|EVL)_[A-Za-z0-9_]*[A-Za-z0-9]\b' | sort -u); do
  printf '%s\n' "$decls" | grep -qE "\b$n\b" || bad="$bad $n"
done
[ -n "$glance" ] && [ -z "$bad" ]
check "every name in the header's API AT A GLANCE chapter is declared" $? \
  "not declared:$bad"

ci=$(sed -n '/apt-get install/,/>\/dev\/null/p' .ci/run | tr ' \\' '\n\n' |
  grep -E '^[a-z0-9][a-z0-9.+-]*$' | grep -vxE 'install|apt-get' | sort -u)
readme=$(grep -E '^ +sudo apt-get install ' README.md | head -n 1 | tr ' ' '\n' |
  grep -E '^[a-z0-9][a-z0-9.+-]*$' | grep -vxE 'sudo|apt-get|install' | sort -u)
[ -n "$ci" ] && [ "$ci" = "$readme" ]
check "README.md's apt-get line installs what .ci/run installs" $? \
  "only in .ci/run: $(printf '%s\n' "$ci" | grep -vxF "$readme" | tr '\n' ' ')only in README: $(printf '%s\n' "$readme" | grep -vxF "$ci" | tr '\n' ' ')"

summary
