#!/bin/sh
# Only evl_-prefixed public symbols may leave the implementation object:
# private evl__ names are static, so an exported one is a leak too.
#   nm_check.sh [cc] [source]   (default: cc, tests/impl.c)
set -e
cc=${1:-cc}
src=${2:-tests/impl.c}
out=${TMPDIR:-/tmp}/evl_nm_$$.o
$cc -std=c99 -O2 -c "$src" -o "$out"
bad=$(nm -g --defined-only "$out" | awk '{print $3}' |
  grep -v '^evl_' || true)
priv=$(nm -g --defined-only "$out" | awk '{print $3}' |
  grep '^evl__' || true)
rm -f "$out"
if [ -n "$bad" ]; then
  echo "symbols without the evl_ prefix:"; echo "$bad"; exit 1
fi
if [ -n "$priv" ]; then
  echo "private evl__ symbols exported (make them static):"; echo "$priv"
  exit 1
fi
echo "nm: every exported symbol starts with evl_ (and none with evl__)"
