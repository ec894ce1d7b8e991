#!/bin/sh
# make test's check of the TLS examples: tests/tls_examples.sh (curl,
# openssl s_client and s_server against https_server, tls_client and
# starttls) for each engine the Makefile built (TLS_ENGINES_OK).
#   sh tests/tls_check.sh BUILD
# Ends with "N passed, N failed, 0 skipped" (a missing engine, or curl or
# openssl missing, is the Makefile's skip, named there).
build=${1:?usage: sh tests/tls_check.sh BUILD}
passed=0 failed=0
for e in ${TLS_ENGINES_OK:-}; do
  out=$(sh tests/tls_examples.sh "$build/examples-tls-$e" "$e" 2>&1)
  rc=$?
  printf '%s\n' "$out" | grep -Ev '^[0-9]+ passed, [0-9]+ failed'
  line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n 1)
  p=$(printf '%s' "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
  f=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
  [ -n "$line" ] || { p=0 f=1; echo "FAIL $e: tls_examples.sh gave no totals"; }
  [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
  passed=$((passed + p)) failed=$((failed + f))
done
echo "$passed passed, $failed failed, 0 skipped"
[ "$failed" -eq 0 ]
