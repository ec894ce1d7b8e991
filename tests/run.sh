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
# STRICT=1 (any skip fails the run), JOBS (binaries run at once; default:
# the number of CPUs), SERIAL_TESTS (tests that measure time in a frame
# loop: run one at a time after the others, so that a loaded machine
# cannot make them miss a frame). A variant named *alt runs on epoll only.
# Results are printed in the order the binaries were queued.
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

# The binaries run in a pool of $JOBS; each job is a script in $work
# (N.sh) whose output and exit status land in N.out and N.rc.
jobs=${JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)}
serial=" ${SERIAL_TESTS-t_budget t_metrics} "
work=$(mktemp -d "${TMPDIR:-/tmp}/evl-run.XXXXXX")
trap 'rm -rf "$work"' EXIT
queued=0 queued_serial=0

# quote ARG: ARG as one sh word.
quote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

# add TEST LABEL [VAR=VALUE ...] CMD...: queues one test binary (in the
# serial list if TEST is in SERIAL_TESTS).
add() {
  t=$1 label=$2
  shift 2
  case $serial in
  *" $t "*) queued_serial=$((queued_serial + 1)) id=s$queued_serial ;;
  *) queued=$((queued + 1)) id=p$queued ;;
  esac
  printf '%s\n' "$label" >"$work/$id.label"
  {
    env=1
    for a in "$@"; do
      case $env$a in
      1[A-Z]*=*) printf '%s=' "${a%%=*}"; quote "${a#*=}" ;;
      *) env=0; quote "$a" ;;
      esac
      printf ' '
    done
    echo
  } >"$work/$id.sh"
}

# pool PREFIX COUNT PARALLEL: runs the queued jobs PREFIX1..PREFIXCOUNT,
# PARALLEL at a time, in the background.
pool() {
  i=1
  while [ "$i" -le "$2" ]; do echo "$1$i"; i=$((i + 1)); done |
    xargs -P "$3" -I{} sh -c 's=$(date +%s); sh "$1/$2.sh" >"$1/$2.out" 2>&1; echo $? >"$1/$2.rc.tmp"; echo $(($(date +%s) - s)) >"$1/$2.secs"; mv "$1/$2.rc.tmp" "$1/$2.rc"' _ "$work" {} &
}

# collect PREFIX COUNT: waits for each job in queue order, adds its counts.
collect() {
  i=1
  while [ "$i" -le "$2" ]; do
    id=$1$i
    while [ ! -f "$work/$id.rc" ]; do sleep 0.2; done
    label=$(cat "$work/$id.label")
    out=$(cat "$work/$id.out")
    rc=$(cat "$work/$id.rc")
    echo "$(cat "$work/$id.secs") $label" >>"$work/times"
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
    i=$((i + 1))
  done
  wait
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
        add "$t" "valgrind $b $t" valgrind -q --leak-check=full --show-leak-kinds=definite,indirect \
          --errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
          --trace-children=no "$build/o2-$b/$t" ;;
      tsan)
        supp=
        [ "$b" = kqueue ] && supp=" suppressions=tests/tsan-libkqueue.supp"
        add "$t" "$v $b $t" "TSAN_OPTIONS=halt_on_error=1 exitcode=66$supp" "$build/$v-$b/$t" ;;
      *)
        # Cross variants run under qemu-user ($v_QEMU names it), each binary
        # with a time limit so a hang is one failure, not a stuck run;
        # without glibc's rseq registration, which failed once in a while
        # under qemu-i386 ("Fatal glibc error: rseq registration failed").
        eval "qemu=\${${v}_QEMU:-}"
        if [ -n "$qemu" ]; then
          add "$t" "$v $b $t" GLIBC_TUNABLES=glibc.pthread.rseq=0 \
            timeout -k 10 "${CROSS_TIMEOUT:-300}" "$qemu" "$build/$v-$b/$t"
        else
          add "$t" "$v $b $t" "$build/$v-$b/$t"
        fi ;;
      esac
    done
  done
done

pool p "$queued" "$jobs"
collect p "$queued"
pool s "$queued_serial" 1
collect s "$queued_serial"

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

# Where the time went: seconds per variant (summed over its binaries,
# which ran JOBS at a time), and the slowest binaries, in the log.
if [ -s "$work/times" ]; then
  printf 'time per variant (s, summed):'
  awk '{ t[$2] += $1 } END { for (v in t) printf " %s %d", v, t[v]; print "" }' "$work/times"
  { echo "== the 20 slowest binaries (s)"; sort -rn "$work/times" | head -n 20; } >>"$log"
fi
echo "(full output in $log)"
echo "$passed passed, $failed failed, $skipped skipped"
if [ "${STRICT:-}" = 1 ] && [ "$skipped" -ne 0 ]; then
  echo "STRICT=1: $skipped skipped; install what the skipped: lines name"
  exit 1
fi
[ "$failed" -eq 0 ]
