#!/bin/sh
# Only evl_-prefixed symbols may leave the implementation object.
set -e
cc=${1:-cc}
out=${TMPDIR:-/tmp}/evl_nm_$$.o
$cc -std=c99 -O2 -c tests/impl.c -o "$out"
bad=$(nm -g --defined-only "$out" | awk '{print $3}' | grep -v '^evl_' || true)
rm -f "$out"
if [ -n "$bad" ]; then
  echo "symbols without the evl_ prefix:"; echo "$bad"; exit 1
fi
echo "nm: every exported symbol starts with evl_"
