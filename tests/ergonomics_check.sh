#!/bin/sh
# Issue 15's ergonomics rule: a task written with evloop.h takes no more
# lines than its asyncio counterpart plus the state structs.
#   sh tests/ergonomics_check.sh [BUILD] [FILE.c...]
# (default: examples/queue_workers.c, task_group.c, crawler.c)
#
# The counting rule. Each example carries, in its top comment, the Python
# it mirrors between a line "[python]" and a line "[end]".
# - Python: the non-blank lines of that block, less comments (lines that
#   start with #) and imports (import x, from x import y).
# - C: the file's non-blank lines once comments are removed, less
#   preprocessor lines (#include, #define...: Python's imports and
#   constants); the lines of the state structs (typedef struct ... } name;
#   or struct name { ... }; at the top level, and a typedef struct name
#   name; ahead of one) are counted apart, as "state".
# - The check fails when C > Python + state.
# A part that both languages leave out of the comparison (the crawler's
# web site) sits in the Python between "[python, not counted]" and "[end]"
# and in the C between the comments "[not counted]" and "[counted]"; its
# lines are printed but not compared.
# Prints one ok/FAIL line per file with the counts, then
# "N passed, N failed, 0 skipped".
. tests/check_lib.sh

[ $# -gt 0 ] && shift # BUILD (unused)
[ $# -gt 0 ] || set -- examples/queue_workers.c examples/task_group.c \
  examples/crawler.c

# Python lines of $1, counted (mode "counted") or left out ("uncounted").
py_lines() {
  awk -v mode="$2" '
    { s = $0; sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s) }
    s == "[python]" { inb = 1; cnt = 1; next }
    s == "[python, not counted]" { inb = 1; cnt = 0; next }
    s == "[end]" { inb = 0; next }
    !inb || s == "" || s ~ /^#/ || s ~ /^import / || s ~ /^from .* import / { next }
    (mode == "counted") == cnt { n++ }
    END { print n + 0 }' "$1"
}

# "code state uncounted" line counts of the C file $1.
c_lines() {
  awk '
    # Comments out (strings and character constants kept), then count.
    {
      out = ""; line = $0; i = 1; len = length(line)
      while (i <= len) {
        c = substr(line, i, 1); c2 = substr(line, i, 2)
        if (incom) {
          if (c2 == "*/") { incom = 0; i += 2 } else i++
          continue
        }
        if (c2 == "/*") {
          # a marker comment switches counting off or on
          rest = substr(line, i)
          if (rest ~ /^\/\* \[not counted\]/) off = 1
          if (rest ~ /^\/\* \[counted\]/) off = 0
          incom = 1; i += 2; continue
        }
        if (c2 == "//") break
        if (c == "\"" || c == "\047") {
          q = c; out = out c; i++
          while (i <= len && substr(line, i, 1) != q) {
            if (substr(line, i, 1) == "\\") { out = out substr(line, i, 1); i++ }
            out = out substr(line, i, 1); i++
          }
          out = out q; i++
          continue
        }
        out = out c; i++
      }
      s = out; sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s)
      if (s == "") next
      if (s ~ /^#/ || pp) { pp = (s ~ /\\$/); next }
      if (off) { unc++; next }
      if (!instruct && s ~ /^typedef struct [A-Za-z_0-9]+ [A-Za-z_0-9]+;$/) {
        state++ # a declaration ahead: typedef struct site site;
        next
      }
      if (!instruct && (s ~ /^typedef struct/ || s ~ /^struct [A-Za-z_0-9]+ *\{/))
        instruct = 1
      if (instruct) {
        state++
        if (s ~ /^\}.*;$/) instruct = 0
        next
      }
      code++
    }
    END { print code + 0, state + 0, unc + 0 }' "$1"
}

for f in "$@"; do
  name=$(basename "$f" .c)
  if [ ! -f "$f" ]; then
    check "$name" 1 "no file $f"
    continue
  fi
  py=$(py_lines "$f" counted)
  pyu=$(py_lines "$f" uncounted)
  counts=$(c_lines "$f")
  c=${counts%% *} cu=${counts##* } st=${counts#* } st=${st%% *}
  msg="$name: C $c, Python $py + state $st = $((py + st))"
  [ "$pyu" -gt 0 ] || [ "$cu" -gt 0 ] &&
    msg="$msg (not counted: Python $pyu, C $cu)"
  echo "$msg"
  st_ok=0
  [ "$py" -gt 0 ] || st_ok=1 # no [python] block: nothing to compare with
  [ "$c" -le $((py + st)) ] || st_ok=1
  check "$name" "$st_ok" "$msg"
done
summary
