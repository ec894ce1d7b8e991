# Shared by the script checks that tests/run.sh runs (sourced, not run):
# check NAME STATUS [FILE|TEXT...] counts NAME as passed if STATUS is 0,
# else as failed, printing the files' contents (or the texts) indented;
# summary prints "N passed, N failed, K skipped" and returns 1 on failure.
passed=0 failed=0 skipped=0
check() {
  name=$1 st=$2
  shift 2
  if [ "$st" -eq 0 ]; then
    passed=$((passed + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name"
    for x in "$@"; do
      if [ -f "$x" ]; then cat "$x"; else printf '%s\n' "$x"; fi
    done | sed 's/^/    /'
  fi
}
summary() {
  echo "$passed passed, $failed failed, $skipped skipped"
  [ "$failed" -eq 0 ]
}
