#!/bin/sh
# Draws the headline comparisons of one `make bench` run as an SVG chart:
#   sh bench/chart.sh bench/results.txt >bench/chart.svg
# results.txt is what `make bench` printed, after the "# run:" lines it
# starts with (date, machine, command). The figures are read from the
# benchmarks' own tables (medians), nothing is typed in by hand:
#   echo, 64-byte messages   server CPU per message     (lower is better)
#   http, wrk                server CPU per request     (lower is better)
#   1,000,000 timers fired   CPU time, peak RSS         (lower is better)
#   spawn, /bin/true         children per second        (higher is better)
#   idle connections         heap bytes per connection  (lower is better)
# Each panel gives every library's figure and its ratio to evloop.h's.
# A panel whose table is missing from the results is left out, saying so.
in=${1:?usage: sh bench/chart.sh RESULTS >CHART.svg}
[ -r "$in" ] || { echo "chart.sh: cannot read $in" >&2; exit 1; }

awk '
function esc(s) { gsub(/&/, "\\&amp;", s); gsub(/</, "\\&lt;", s); gsub(/>/, "\\&gt;", s); return s }
# A library row of a table: name and figures (the "|" columns kept).
function known(n) { return n ~ /^(evloop|libuv|libev|libevent|epoll|heap)$/ }
/^# run: / { sub(/^# run: /, ""); meta[++nmeta] = $0; next }
/^(==|#) / { sec = ""; }
/^== echo: .* of 64-byte messages/ { sec = "echo" }
/^== http: /                       { sec = "http" }
/^== [0-9]+ timers, .*all fired/   { sec = "timers" }
/^== spawn: .* 0 MiB of touched heap/ { sec = "spawn" }
/^== idle: /                       { sec = "idle" }
/^== / && sec != "" { title[sec] = substr($0, 4) }
sec != "" && known($1) {
  if (sec == "echo" || sec == "http") { add(sec, $1, $6 / 1000) } # ns -> us
  else if (sec == "timers") { add("tcpu", $1, $2); add("trss", $1, $4) }
  else if (sec == "spawn") { add(sec, $1, $2) }
  else if (sec == "idle") { add(sec, $1, $2) }
}
function add(p, lib, v) { n = ++cnt[p]; name[p, n] = lib; val[p, n] = v + 0 }

function label(lib) {
  if (lib == "evloop") return "evloop.h"
  if (lib == "epoll") return "raw epoll"
  if (lib == "heap") return "plain heap"
  return lib
}
function color(lib) {
  if (lib == "evloop") return "#d2402a"
  if (lib == "libuv") return "#4a78b5"
  if (lib == "libev") return "#5aa05a"
  if (lib == "libevent") return "#9a6fb0"
  return "#8c8c8c"
}
function num(v, unit) {
  if (v >= 100) s = commas(sprintf("%.0f", v)); else if (v >= 10) s = sprintf("%.1f", v); else s = sprintf("%.2f", v)
  return s " " unit
}
function commas(s,    r) {
  r = ""
  while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) }
  return s r
}
# panel P at (x, y): heading, what the figure is, bars.
function panel(p, x, y, head, what, unit, better,    i, n, mx, ev, w, bw, yy, r, t) {
  n = cnt[p]
  printf "<g transform=\"translate(%d,%d)\">\n", x, y
  printf "<text class=\"h\" x=\"0\" y=\"0\">%s</text>\n", esc(head)
  printf "<text class=\"s\" x=\"0\" y=\"17\">%s; %s is better</text>\n", esc(what), better
  if (n == 0) {
    printf "<text class=\"s\" x=\"0\" y=\"45\">(not in this run)</text>\n</g>\n"
    return
  }
  mx = 0; ev = 0
  for (i = 1; i <= n; i++) { if (val[p, i] > mx) mx = val[p, i]; if (name[p, i] == "evloop") ev = val[p, i] }
  bw = 230
  for (i = 1; i <= n; i++) {
    yy = 30 + (i - 1) * 24
    w = mx > 0 ? val[p, i] / mx * bw : 0
    if (w < 1) w = 1
    printf "<text class=\"l%s\" x=\"84\" y=\"%d\" text-anchor=\"end\">%s</text>\n", name[p, i] == "evloop" ? " b" : "", yy + 13, label(name[p, i])
    printf "<rect x=\"90\" y=\"%d\" width=\"%.1f\" height=\"17\" fill=\"%s\"/>\n", yy, w, color(name[p, i])
    t = num(val[p, i], unit)
    if (name[p, i] != "evloop" && ev > 0) {
      r = val[p, i] / ev
      t = t sprintf("  (%.2f\303\227)", r)
    }
    printf "<text class=\"v\" x=\"%.1f\" y=\"%d\">%s</text>\n", 90 + w + 5, yy + 13, esc(t)
  }
  printf "</g>\n"
}
END {
  W = 960; ph = 180; H = 88 + 3 * ph + 30 + 16 * nmeta
  printf "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
  printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"DejaVu Sans, Verdana, sans-serif\">\n", W, H, W, H
  printf "<style>.t{font-size:18px;font-weight:bold}.h{font-size:14px;font-weight:bold}.s{font-size:11px;fill:#555}.l{font-size:12px}.l.b{font-weight:bold}.v{font-size:11px}.m{font-size:11px;fill:#333}</style>\n"
  printf "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
  printf "<text class=\"t\" x=\"20\" y=\"30\">evloop.h beside libuv, libev, libevent and raw epoll</text>\n"
  printf "<text class=\"s\" x=\"20\" y=\"50\">Medians of one make bench run, every library in the same run, interleaved. In brackets: the figure over evloop.h%ss.</text>\n", "\342\200\231"
  y0 = 88
  panel("echo", 20, y0, "Echo server, 64-byte ping-pong", "server CPU per message, 100 connections", "\302\265s", "lower")
  panel("http", 500, y0, "HTTP/1.1 keep-alive under wrk", "server CPU per request, wrk -t2 -c100", "\302\265s", "lower")
  panel("tcpu", 20, y0 + ph, "1,000,000 timers, all fired: CPU", "user+sys CPU time; plain heap: a bare binary heap, the floor", "ms", "lower")
  panel("trss", 500, y0 + ph, "1,000,000 timers, all fired: memory", "peak RSS of the process (same floor)", "MiB", "lower")
  panel("spawn", 20, y0 + 2 * ph, "Spawning /bin/true, 8 at a time", "children spawned and reaped per second", "children/s", "higher")
  panel("idle", 500, y0 + 2 * ph, "Idle connections (10,000)", "server heap per connection", "B", "lower")
  yy = y0 + 3 * ph + 6
  for (i = 1; i <= nmeta; i++) printf "<text class=\"m\" x=\"20\" y=\"%d\">%s</text>\n", yy + (i - 1) * 16, esc(meta[i])
  printf "</svg>\n"
}' "$in"
