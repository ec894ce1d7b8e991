#!/usr/bin/env bash
# Slowloris against http_server (tests/net_examples.sh runs it):
#   bash tests/slowloris.sh PORT N LIMIT
# Opens N connections that each send a partial request head and then
# trickle one header byte every 0.5 s for 2 LIMIT + 2 seconds; 10 curl
# requests start at LIMIT/2 and 10 more just after LIMIT. Prints
#   opened N
#   early K          (slow connections answered before LIMIT/2: want 0)
#   curl_during K/10 (curl answered 200, started at LIMIT/2)
#   curl_after K/10  (curl answered 200, started at LIMIT + 0.5 s)
#   first_closed S   (seconds until the first slow connection got its 408)
#   slow_closed K/N  (slow connections answered 408, then closed)
#   slow_refused K/N (closed with no answer: a server at its fd limit
#                     resets at once what it cannot take)
# bash for /dev/tcp; curl and awk must be installed.
port=${1:?usage: slowloris.sh PORT N LIMIT} n=${2:?} limit=${3:?}
trap '' PIPE # a write to a closed slow connection must not end us
url=http://127.0.0.1:$port/
tmp=$(mktemp -d "${TMPDIR:-/tmp}/slowloris.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.6f\\n\", $1 }"; } # calc EXPR: its value
holds() { awk "BEGIN { exit !($1) }"; }              # holds EXPR: true?

fds=()
t0=$(now)
for ((i = 0; i < n; i++)); do
  exec {fd}<>"/dev/tcp/127.0.0.1/$port" || break
  printf 'GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ' >&"$fd" 2>/dev/null
  fds+=("$fd")
done
echo "opened ${#fds[@]}"

# None is answered before its time.
early=0
sleep "$(calc "$limit / 2")"
for fd in "${fds[@]}"; do
  IFS= read -r -t 0.001 line <&"$fd" 2>/dev/null && early=$((early + 1))
done
echo "early $early"

# curl: 10 requests now, while the slow connections hold the server, and
# 10 once they were closed.
curls() { # NAME
  for ((j = 0; j < 10; j++)); do
    curl -s -o /dev/null -w '%{http_code}\n' --max-time $((limit * 4 + 10)) \
      "$url" >"$tmp/$1$j" 2>&1 &
  done
}
curls during
after=$(calc "$t0 + $limit + 0.5")
first_closed=""
end=$(calc "$t0 + 2 * $limit + 2")
while holds "$(now) < $end"; do
  if [ -n "$after" ] && holds "$(now) >= $after"; then
    curls after
    after=""
  fi
  for fd in "${fds[@]}"; do printf 'x' >&"$fd" 2>/dev/null; done
  if [ -z "$first_closed" ] &&
    IFS= read -r -t 0.001 line <&"${fds[0]}" 2>/dev/null; then
    first_closed=$(calc "$(now) - $t0")
    first_line=$line
  fi
  sleep 0.5
done
wait
echo "curl_during $(cat "$tmp"/during* | grep -c '^200$')/10"
echo "curl_after $(cat "$tmp"/after* | grep -c '^200$')/10"
[ -n "$first_closed" ] && case $first_line in
HTTP/1.1\ 408*) ;;
*) first_closed="none ($first_line)" ;;
esac
echo "first_closed ${first_closed:-none}"

# Every slow connection got 408 and then EOF.
closed=0 reset=0
for fd in "${fds[@]}"; do
  if [ "$fd" = "${fds[0]}" ] && [ -n "$first_line" ]; then
    line=$first_line rc=0
  else
    IFS= read -r -t 5 line <&"$fd" 2>"$tmp/err"
    rc=$?
  fi
  case $line in
  HTTP/1.1\ 408*)
    # the rest of the answer, then EOF (status 1; more than 128: timeout)
    while [ $rc -eq 0 ]; do
      IFS= read -r -t 5 rest <&"$fd" 2>/dev/null
      rc=$?
    done
    [ $rc -eq 1 ] && closed=$((closed + 1))
    ;;
  "") [ $rc -eq 1 ] && reset=$((reset + 1)) ;; # EOF or reset, no answer
  esac
  exec {fd}>&-
done
echo "slow_closed $closed/${#fds[@]}"
echo "slow_refused $reset/${#fds[@]}"
