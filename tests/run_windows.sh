#!/bin/sh
# Runs the Windows test binaries (cross-compiled with mingw-w64) under wine:
#   run_windows.sh BUILD "BACKENDS" "TESTS" "EXAMPLES"
# BUILD/win/T.exe for each test T runs once per backend
# (EVLOOP_TEST_BACKEND), each under a timeout; BUILD/win/examples/E.exe for
# each example E runs once. A fresh wine prefix is made under BUILD, one
# wineserver stays up for the run and is always killed at the end. Output
# goes to files (BUILD/win/out/); this prints one line per binary, the
# skipped tests with their reasons, and ends with
# "N passed, N failed, N skipped" (exit status 1 if anything failed).
build=$1 backends=$2 tests=$3 examples=$4
win=$build/win
out=$win/out
log=$build/test-windows-log.txt
per_binary=${WIN_TEST_TIMEOUT:-900}
# check NAME STATUS [FILE|TEXT...] and summary; the counts start at 0.
. tests/check_lib.sh

command -v wine >/dev/null 2>&1 || {
  echo "wine is not installed (apt-get install wine wine64)"
  echo "0 passed, 1 failed, 0 skipped"
  exit 1
}

WINEPREFIX=$(pwd)/$build/wineprefix
WINEARCH=win64 WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
export WINEPREFIX WINEARCH WINEDEBUG WINEDLLOVERRIDES
unset DISPLAY WAYLAND_DISPLAY
rm -rf "$WINEPREFIX" "$out"
mkdir -p "$WINEPREFIX" "$out"
: >"$log"

# One wineserver for the whole run (later starts take tens of ms instead of
# about a second), killed whatever happens: a hidden console process that
# wine makes for a child can linger and keep it up.
wineserver -p
trap 'wineserver -k 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM
start=$(date +%s)
if ! timeout 120 wineboot -i </dev/null >"$out/wineboot.log" 2>&1; then
  echo "FAIL wineboot -i (see $out/wineboot.log)"
  failed=$((failed + 1))
fi

# run LABEL FILE CMD...: runs one test binary under the timeout, output in
# FILE (without the \r of the C runtime's text mode); adds its counts.
run() {
  label=$1 file=$2
  shift 2
  timeout -k 10 "$per_binary" "$@" </dev/null >"$file.raw" 2>&1
  rc=$?
  tr -d '\r' <"$file.raw" >"$file" && rm -f "$file.raw"
  printf '%s\n' "== $label (exit status $rc)" >>"$log"
  cat "$file" >>"$log"
  line=$(grep -E '[0-9]+ passed, [0-9]+ failed' "$file" | tail -n 1)
  p=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) passed.*/\1/')
  f=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
  s=$(printf '%s' "$line" | sed -E -n 's/.* ([0-9]+) skipped.*/\1/p')
  [ -n "$line" ] || { p=0 f=1; }
  [ -n "$s" ] || s=0
  [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
  passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
  if [ "$f" -ne 0 ]; then
    [ "$rc" -eq 124 ] && echo "FAIL $label: timeout after $per_binary s" ||
      echo "FAIL $label"
    grep -v -E '^(ok |skip )' "$file" | sed 's/^/    /'
  else
    echo "ok   $label ($p passed, $s skipped)"
  fi
  grep -E '^skip ' "$file" | sed 's/^/    /'
}

for b in $backends; do
  for t in $tests; do
    EVLOOP_TEST_BACKEND=$b run "$b $t" "$out/$t.$b.txt" wine "$win/$t.exe"
  done
done

# t_signal's Ctrl-C test needs a Ctrl-C from outside: wine has no console,
# but runs the console control handlers when its process gets a Unix
# SIGINT. Once the test says it is ready, it gets one.
sigint_test() {
  b=$1 name=ctrl_c_from_outside_runs_the_sigint_handlers
  file=$out/t_signal-ctrl-c.$b.txt
  EVLOOP_TEST_BACKEND=$b EVL_TEST_SIGINT_FROM_OUTSIDE=1 \
    wine "$win/t_signal.exe" $name </dev/null >"$file.raw" 2>&1 &
  pid=$!
  i=0
  while [ $i -lt 600 ] && ! grep -q 'ready for SIGINT' "$file.raw"; do
    sleep 0.1
    i=$((i + 1))
  done
  kill -INT $pid 2>/dev/null
  (sleep 60 && kill -KILL $pid 2>/dev/null) &
  watchdog=$!
  wait $pid
  rc=$?
  kill $watchdog 2>/dev/null
  tr -d '\r' <"$file.raw" >"$file" && rm -f "$file.raw"
  printf '%s\n' "== $b t_signal $name, kill -INT (exit status $rc)" >>"$log"
  cat "$file" >>"$log"
  [ "$rc" -eq 0 ] && grep -q "^ok $name" "$file"
  check "$b t_signal $name (kill -INT from outside)" $? "exit status $rc" "$file"
}
case " $tests " in
*" t_signal "*) for b in $backends; do sigint_test "$b"; done ;;
esac

# The examples that build on Windows and stop by themselves: smoke tests.
for e in $examples; do
  timeout -k 10 60 wine "$win/examples/$e.exe" </dev/null \
    >"$out/example-$e.txt" 2>&1
  check "example $e" $? "$out/example-$e.txt"
done

echo "(wine $(wine --version 2>/dev/null), $(($(date +%s) - start)) s;" \
  "full output in $log)"
summary
