#!/bin/sh
# Runs the built test binaries:
#   run.sh BUILD "BACKENDS" "TESTS" "THREADED" "EXAMPLES" "NOTHREAD"
# Each binary prints one line per test and "N passed, N failed"; this adds
# them up and ends with "N passed, N failed, K skipped" for the whole run,
# where K counts the parts skipped for a missing tool (each named once with
# its "skipped:" line; a test that does not apply to the platform is not
# counted here: the log has its "skip" line).
# Environment: VARIANTS (build/VARIANT-BACKEND/ dirs to run), LOG (the full
# output), VARIANT_QEMU (run that variant's binaries under this qemu-user,
# each for at most CROSS_TIMEOUT s), KQPIPE_TESTS and SUBSET_TESTS (the
# lists of the kqpipe variant and of nofs, noproc, nosub, nonet and
# core), SKIPS (what the Makefile found it cannot run, entries ending
# with ';'), CHECKS (scripts run as
# `sh SCRIPT BUILD`, each ending with "N passed, N failed, K skipped"),
# STRICT=1 (any skip fails the run). A variant named *alt runs on epoll only.
build=$1 backends=$2 tests=$3 threaded=$4 examples=$5 nothread=$6
variants=${VARIANTS-"o2 asan tsan tcc musl nothr kqpipe nofs noproc nosub nonet core valgrind"}
passed=0 failed=0 skipped=0
log=${LOG:-$build/test-log.txt}
mkdir -p "$(dirname "$log")"
: >"$log"

# What the Makefile could not build here, named first.
skips=$(printf '%s' "${SKIPS:-}" | tr ';' '\n' | sed 's/^ *//; s/ *$//' | grep -v '^$')
if [ -n "$skips" ]; then
  printf '%s\n' "$skips" | sed 's/^/skipped: /'
  skipped=$(printf '%s\n' "$skips" | wc -l)
fi

# run LABEL CMD...: runs one test binary, adds its counts.
run() {
  label=$1
  shift
  out=$("$@" 2>&1)
  rc=$?
  [ "$rc" -eq 124 ] && out="$out
(timed out: killed after ${CROSS_TIMEOUT:-300} s)"
  printf '%s\n' "== $label" "$out" >>"$log"
  line=$(printf '%s\n' "$out" | grep -E '[0-9]+ passed, [0-9]+ failed' | tail -n 1)
  p=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) passed.*/\1/')
  f=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
  [ -n "$line" ] || { p=0 f=1; }
  [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
  passed=$((passed + p)) failed=$((failed + f))
  if [ "$f" -ne 0 ]; then
    echo "FAIL $label"
    printf '%s\n' "$out" | grep -v '^ok ' | sed 's/^/    /'
  else
    echo "ok   $label ($p)"
  fi
}

for v in $variants; do
  for b in $backends; do
    # Pairs the Makefile could not build (SKIPPED="variant-backend ...").
    case " $SKIPPED " in
    *" $v-$b "*)
      echo "skipped: $v $b: $SKIP_WHY"
      skipped=$((skipped + 1))
      continue ;;
    esac
    case $v in
    tsan) list=$threaded ;;
    nothr) list=$nothread ;;
    kqpipe) [ "$b" = kqueue ] || continue; list=$KQPIPE_TESTS ;;
    nofs | noproc | nosub | nonet | core) list=$SUBSET_TESTS ;;
    valgrind) case $b in epoll | kqueue) ;; *) continue ;; esac; list=$tests ;;
    *alt) [ "$b" = epoll ] || continue; list=$tests ;;
    o2 | asan) list="$tests ${TLS_TESTS:-}" ;; # TLS builds: these two only
    *) list=$tests ;;
    esac
    for t in $list; do
      case $v in
      valgrind)
        run "valgrind $b $t" valgrind -q --leak-check=full --show-leak-kinds=definite,indirect \
          --errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
          --trace-children=no "$build/o2-$b/$t" ;;
      tsan)
        supp=
        [ "$b" = kqueue ] && supp=" suppressions=tests/tsan-libkqueue.supp"
        TSAN_OPTIONS="halt_on_error=1 exitcode=66$supp" run "$v $b $t" "$build/$v-$b/$t" ;;
      *)
        # Cross variants run under qemu-user ($v_QEMU names it), each binary
        # with a time limit so a hang is one failure, not a stuck run.
        eval "qemu=\${${v}_QEMU:-}"
        if [ -n "$qemu" ]; then
          run "$v $b $t" timeout -k 10 "${CROSS_TIMEOUT:-300}" "$qemu" "$build/$v-$b/$t"
        else
          run "$v $b $t" "$build/$v-$b/$t"
        fi ;;
      esac
    done
  done
done

# The examples run as smoke tests (they stop by themselves).
for e in $examples; do
  if out=$(timeout 60 "$build/examples/$e" 2>&1); then
    passed=$((passed + 1)); echo "ok   example $e"
  else
    failed=$((failed + 1)); echo "FAIL example $e"; printf '%s\n' "$out" | sed 's/^/    /'
  fi
done

# Script checks (tests/net_examples.sh: the network examples against real
# clients; tests/install_check.sh; tests/version_check.sh). Each prints
# ok/FAIL/skipped: lines and "N passed, N failed, K skipped".
for c in ${CHECKS:-}; do
  out=$(sh "$c" "$build" 2>&1)
  rc=$?
  printf '%s\n' "== $c" "$out" >>"$log"
  line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped' | tail -n 1)
  p=$(printf '%s' "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
  f=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
  k=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) skipped.*/\1/')
  [ -n "$line" ] || { p=0 f=1 k=0; }
  [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
  passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + k))
  name=$(basename "$c" .sh)
  printf '%s\n' "$out" | grep -E '^(ok|FAIL) ' | sed "s/^ok  /ok   $name:/; s/^FAIL /FAIL $name: /"
  printf '%s\n' "$out" | grep '^skipped: '
  [ "$f" -eq 0 ] || printf '%s\n' "$out" | grep -Ev '^(ok|skipped:) ' | sed 's/^/    /'
done

echo "(full output in $log)"
echo "$passed passed, $failed failed, $skipped skipped"
if [ "${STRICT:-}" = 1 ] && [ "$skipped" -ne 0 ]; then
  echo "STRICT=1: $skipped skipped; install what the skipped: lines name"
  exit 1
fi
[ "$failed" -eq 0 ]
