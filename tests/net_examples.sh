#!/bin/sh
# Drives the networking examples with real clients, on loopback only:
#   sh tests/net_examples.sh BUILD_DIR
# BUILD_DIR/examples/NAME are the built examples. Needs socat, nc (the
# OpenBSD netcat), curl and wrk (Debian: socat netcat-openbsd curl wrk); the
# checks of a server whose client tools are missing are skipped, in one
# "skipped:" line naming the packages. Prints "ok   NAME" or "FAIL NAME"
# (and the output) per check, then "N passed, N failed, K skipped".
# Every client runs under timeout; every server started is killed on exit.
build=${1:?usage: sh tests/net_examples.sh BUILD_DIR}
ex=$build/examples
passed=0 failed=0 skipped=0
pids=""
tmp=$(mktemp -d "${TMPDIR:-/tmp}/net_examples.XXXXXX") || exit 1

cleanup() {
  for p in $pids; do kill -KILL "$p" 2>/dev/null; done
  exec 9>&- 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

ok() {
  passed=$((passed + 1))
  echo "ok   $1"
}

# fail NAME [FILE|TEXT...]: the files' contents (or the texts) follow.
fail() {
  failed=$((failed + 1))
  echo "FAIL $1"
  shift
  for x in "$@"; do
    if [ -f "$x" ]; then
      head -c 4000 "$x"
      # a file that does not end with a newline (an HTTP body) gets one
      [ -n "$(head -c 4000 "$x" | tail -c 1)" ] && echo
    else
      printf '%s\n' "$x"
    fi
  done | sed 's/^/    /'
}

# need NAME TOOL...: false, and NAME's checks are one skip naming the
# Debian packages, unless every tool is installed.
need() {
  name=$1 pkgs=""
  shift
  for tool in "$@"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      case $tool in
      nc) pkgs="$pkgs netcat-openbsd" ;;
      *) pkgs="$pkgs $tool" ;;
      esac
    fi
  done
  [ -z "$pkgs" ] && return 0
  skipped=$((skipped + 1))
  echo "skipped: $name example against real clients (apt-get install$pkgs)"
  return 1
}

# alive PID: the process runs (a zombie does not count).
alive() {
  if [ -r "/proc/$1/stat" ]; then
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
  else
    kill -0 "$1" 2>/dev/null
  fi
}

forget() {
  pids=$(echo " $pids " | sed "s/ $1 / /")
}

# peak_rss PID: the process's peak resident set in KiB (empty without
# /proc).
peak_rss() {
  sed -n 's/^VmHWM:[^0-9]*\([0-9]*\).*/\1/p' "/proc/$1/status" 2>/dev/null
}

# A port in 20000-29999 derived from our pid; each start takes the next one.
next_port=$((20000 + $$ % 10000))

# start_server NAME [ARG...]: starts $ex/NAME --port P ARG... on a free
# port and waits (5 s at most per try) for its "listening on" line; with
# srv_nofile set, under that fd limit (ulimit -n). Sets srv_pid, srv_port
# and srv_log; returns 1 if it never listened (10 ports tried).
start_server() {
  name=$1
  shift
  srv_log=$tmp/$name.log
  srv_pid="" srv_port=""
  tries=0
  while [ $tries -lt 10 ]; do
    tries=$((tries + 1))
    port=$next_port
    next_port=$((next_port >= 29999 ? 20000 : next_port + 1))
    : >"$srv_log"
    if [ -n "${srv_nofile:-}" ]; then
      (ulimit -n "$srv_nofile" && exec "$ex/$name" --port "$port" "$@") >"$srv_log" 2>&1 &
    else
      "$ex/$name" --port "$port" "$@" >"$srv_log" 2>&1 &
    fi
    srv_pid=$!
    pids="$pids $srv_pid"
    i=0
    while [ $i -lt 50 ]; do
      if grep -q '^listening on ' "$srv_log"; then
        srv_port=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$srv_log" |
          head -n 1)
        [ "$srv_port" = "$port" ] && return 0
        break
      fi
      alive "$srv_pid" || break # port taken: try the next one
      sleep 0.1
      i=$((i + 1))
    done
    kill -KILL "$srv_pid" 2>/dev/null
    wait "$srv_pid" 2>/dev/null
    forget "$srv_pid"
  done
  srv_pid=""
  return 1
}

# stop_server SIGNAL: sends it and waits up to 5 s for the server to exit;
# returns its exit status (124 if it did not exit in time; it is killed).
stop_server() {
  [ -n "$srv_pid" ] || return 125
  kill "-$1" "$srv_pid" 2>/dev/null
  i=0
  while [ $i -lt 50 ] && alive "$srv_pid"; do
    sleep 0.1
    i=$((i + 1))
  done
  if alive "$srv_pid"; then
    kill -KILL "$srv_pid" 2>/dev/null
    wait "$srv_pid" 2>/dev/null
    rc=124
  else
    wait "$srv_pid"
    rc=$?
  fi
  forget "$srv_pid"
  srv_pid=""
  return $rc
}

# raw_http SECONDS REQUEST: sends REQUEST (a printf format) to the server
# with socat and keeps socat's input open, so that only the server can end
# the connection. The answer goes to $tmp/raw; raw_rc is socat's status
# (124: the server left the connection open for SECONDS).
raw_http() {
  rm -f "$tmp/fifo"
  mkfifo "$tmp/fifo" || return 1
  timeout "$1" socat - "TCP:127.0.0.1:$srv_port" <"$tmp/fifo" >"$tmp/raw" 2>&1 &
  sp=$!
  exec 9>"$tmp/fifo"
  # A subshell: if socat is gone, SIGPIPE ends the subshell, not us.
  # shellcheck disable=SC2059
  (printf "$2" >&9) 2>/dev/null
  wait "$sp"
  raw_rc=$?
  exec 9>&-
}

# expect_raw NAME SECONDS REQUEST RC STATUS: raw_http SECONDS REQUEST, then
# ok NAME when socat's status is RC (0: the server closed the connection;
# 124: it kept it open for SECONDS) and the answer is one response (one
# line starting with STATUS, its first line).
expect_raw() {
  raw_http "$2" "$3"
  if [ "$raw_rc" -eq "$4" ] && head -n 1 "$tmp/raw" | grep -q "^$5" &&
    [ "$(count "^$5" "$tmp/raw")" = 1 ]; then
    ok "$1"
  elif [ "$4" -eq 0 ]; then
    fail "$1" "socat status $raw_rc (124: the server did not close)" "$tmp/raw"
  else
    fail "$1" "socat status $raw_rc (0: the server closed)" "$tmp/raw"
  fi
}

# count PATTERN FILE: how many lines match.
count() {
  grep -c "$1" "$2" 2>/dev/null
}

# matches PATTERN FILE: how many times it matches (answers are not lines).
matches() {
  grep -o "$1" "$2" 2>/dev/null | wc -l
}

# ---- echo_server ----------------------------------------------------------
if need echo_server socat nc; then
  if ! start_server echo_server; then
    fail "echo_server starts" "$srv_log"
  else
    ok "echo_server starts"
    port=$srv_port
    printf 'Hello\nsecond line\n\n  spaces and\ttabs \nno newline at the end' >"$tmp/lines"

    timeout 10 socat -t 5 - "TCP:127.0.0.1:$port" <"$tmp/lines" >"$tmp/out" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && cmp -s "$tmp/lines" "$tmp/out"; then
      ok "echo_server lines (socat)"
    else
      fail "echo_server lines (socat)" "socat status $rc, got:" "$tmp/out"
    fi

    timeout 10 nc -N 127.0.0.1 "$port" <"$tmp/lines" >"$tmp/out" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && cmp -s "$tmp/lines" "$tmp/out"; then
      ok "echo_server lines (nc)"
    else
      fail "echo_server lines (nc)" "nc status $rc, got:" "$tmp/out"
    fi

    head -c 1048576 /dev/urandom >"$tmp/rand"
    timeout 30 socat -t 10 - "TCP:127.0.0.1:$port" <"$tmp/rand" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ $rc -eq 0 ] && cmp "$tmp/rand" "$tmp/out" >"$tmp/cmp" 2>&1; then
      ok "echo_server 1 MiB of random data"
    else
      fail "echo_server 1 MiB of random data" "socat status $rc" "$tmp/err" "$tmp/cmp"
    fi

    # Ten clients at once, 256 KiB each.
    j=0 cpids=""
    while [ $j -lt 10 ]; do
      head -c 262144 /dev/urandom >"$tmp/in$j"
      timeout 30 socat -t 10 - "TCP:127.0.0.1:$port" <"$tmp/in$j" >"$tmp/out$j" 2>&1 &
      cpids="$cpids $!"
      j=$((j + 1))
    done
    bad=""
    for p in $cpids; do wait "$p" || bad="$bad status"; done
    j=0
    while [ $j -lt 10 ]; do
      cmp -s "$tmp/in$j" "$tmp/out$j" || bad="$bad client$j"
      j=$((j + 1))
    done
    if [ -z "$bad" ]; then
      ok "echo_server 10 concurrent clients"
    else
      fail "echo_server 10 concurrent clients" "wrong:$bad"
    fi

    # Flow control: 32 MiB to a client that reads nothing for a second.
    # With pause_reading the server buffers about the high water mark
    # (64 KiB) per connection instead of what the client sends meanwhile
    # (its peak RSS grows by 1 MiB, against some 28 MiB without).
    hwm0=$(peak_rss "$srv_pid")
    head -c 33554432 /dev/zero |
      timeout 60 socat -t 20 - "TCP:127.0.0.1:$port" 2>"$tmp/err" |
      { sleep 1; wc -c; } >"$tmp/out"
    n=$(tr -d ' ' <"$tmp/out")
    hwm1=$(peak_rss "$srv_pid")
    grew=$((${hwm1:-0} - ${hwm0:-0}))
    if [ "$n" = 33554432 ] && [ $grew -lt 12288 ]; then
      ok "echo_server flow control (32 MiB to a slow reader)"
    else
      fail "echo_server flow control (32 MiB to a slow reader)" \
        "echoed: $n bytes, server peak RSS grew by $grew KiB" "$tmp/err"
    fi

    if [ -x "$ex/echo_client" ]; then
      timeout 10 "$ex/echo_client" --port "$port" >"$tmp/out" 2>&1
      rc=$?
      timeout 10 "$ex/echo_client" --host 127.0.0.1 --port "$port" "one two  three" >>"$tmp/out" 2>&1
      rc2=$?
      if [ $rc -eq 0 ] && [ $rc2 -eq 0 ] &&
        grep -q '^Data sent: Hello World!$' "$tmp/out" &&
        grep -q '^Data received: Hello World!$' "$tmp/out" &&
        grep -q '^Data received: one two  three$' "$tmp/out"; then
        ok "echo_client against echo_server"
      else
        fail "echo_client against echo_server" "status $rc and $rc2" "$tmp/out"
      fi
    else
      fail "echo_client against echo_server" "$ex/echo_client is not built"
    fi

    # Clients that reset (they close with the echo unread): no line each.
    if need "echo_server resets print no line each" bash; then
      timeout 20 bash -c 'for i in $(seq 50); do
          exec {fd}<>"/dev/tcp/127.0.0.1/$1" || exit 1
          printf hello >&"$fd"; sleep 0.02; exec {fd}>&-
        done' sh "$port" >"$tmp/out" 2>&1
      rc=$?
      sleep 0.2
      lines=$(count 'connection lost' "$srv_log")
      if [ $rc -eq 0 ] && [ "$lines" = 0 ] && alive "$srv_pid"; then
        ok "echo_server 50 resets print no line each"
      else
        fail "echo_server 50 resets print no line each" \
          "clients status $rc, $lines lines:" "$srv_log" "$tmp/out"
      fi
    fi

    # SIGTERM with a connection open: the server closes it and exits 0.
    timeout 10 socat -u "TCP:127.0.0.1:$port" - >/dev/null 2>&1 &
    idle=$!
    sleep 0.2
    stop_server TERM
    rc=$?
    wait "$idle"
    irc=$?
    if [ $rc -eq 0 ] && [ $irc -ne 124 ]; then
      ok "echo_server SIGTERM with a connection open -> exit 0"
    else
      fail "echo_server SIGTERM with a connection open -> exit 0" \
        "server status $rc (124: still running after 5 s)," \
        "idle client status $irc (124: never closed)" "$srv_log"
    fi
  fi

  if start_server echo_server; then
    stop_server INT
    rc=$?
    if [ $rc -eq 0 ]; then
      ok "echo_server SIGINT -> exit 0"
    else
      fail "echo_server SIGINT -> exit 0" "status $rc" "$srv_log"
    fi
  else
    fail "echo_server SIGINT -> exit 0" "it did not start" "$srv_log"
  fi
fi

# ---- http_server ----------------------------------------------------------
if need http_server curl socat wrk; then
  if ! start_server http_server; then
    fail "http_server starts" "$srv_log"
  else
    ok "http_server starts"
    port=$srv_port
    url=http://127.0.0.1:$port/

    code=$(timeout 10 curl -sS -o "$tmp/body" -D "$tmp/head" -w '%{http_code}' "$url" 2>"$tmp/err")
    if [ "$code" = 200 ] && printf 'Hello, World!' | cmp -s - "$tmp/body" &&
      grep -qi '^Content-Type: text/plain' "$tmp/head" &&
      grep -qi '^Content-Length: 13' "$tmp/head"; then
      ok "http_server GET -> 200 Hello, World!"
    else
      fail "http_server GET -> 200 Hello, World!" "status $code" "$tmp/err" "$tmp/head" "$tmp/body"
    fi

    # Two URLs, one connection: the second transfer makes no new connection.
    conns=$(timeout 10 curl -sS -o /dev/null -o /dev/null \
      -w '%{http_code}:%{num_connects} ' "$url" "$url" 2>"$tmp/err")
    if [ "$conns" = "200:1 200:0 " ]; then
      ok "http_server keep-alive (curl, 2 requests, 1 connection)"
    else
      fail "http_server keep-alive (curl, 2 requests, 1 connection)" \
        "curl: '$conns' (code:num_connects per request)" "$tmp/err"
    fi

    # Two requests in one write; the second asks to close.
    printf 'GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n' |
      timeout 10 socat -t 5 - "TCP:127.0.0.1:$port" >"$tmp/out" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && [ "$(matches 'HTTP/1.1 200 OK' "$tmp/out")" -eq 2 ] &&
      [ "$(matches 'Hello, World!' "$tmp/out")" -eq 2 ]; then
      ok "http_server pipelining (2 requests in one write)"
    else
      fail "http_server pipelining (2 requests in one write)" "socat status $rc" "$tmp/out"
    fi

    # One request split over several writes.
    { printf 'GET / HT'; sleep 0.2; printf 'TP/1.1\r\nHo'; sleep 0.2
      printf 'st: a\r\nConnection: close\r\n'; sleep 0.2; printf '\r\n'; } |
      timeout 10 socat -t 5 - "TCP:127.0.0.1:$port" >"$tmp/out" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && [ "$(count '^HTTP/1.1 200 OK' "$tmp/out")" = 1 ]; then
      ok "http_server request split over 4 writes"
    else
      fail "http_server request split over 4 writes" "socat status $rc" "$tmp/out"
    fi

    expect_raw "http_server malformed request -> 400 and close" \
      5 'GARBAGE\r\n\r\n' 0 'HTTP/1.1 400 '
    expect_raw "http_server Connection: close -> close after the answer" \
      5 'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n' 0 'HTTP/1.1 200 OK'
    expect_raw "http_server HTTP/1.0 -> close after the answer" \
      5 'GET / HTTP/1.0\r\n\r\n' 0 'HTTP/1.1 200 OK'
    expect_raw "http_server HTTP/1.1 -> the connection stays open" \
      1.5 'GET / HTTP/1.1\r\nHost: a\r\n\r\n' 124 'HTTP/1.1 200 OK'
    big=$(head -c 9000 /dev/zero | tr '\0' a)
    expect_raw "http_server 9000-byte header -> 431 and close" \
      5 "GET / HTTP/1.1\\r\\nHost: a\\r\\nX-Big: $big\\r\\n\\r\\n" 0 'HTTP/1.1 431 '

    timeout 30 wrk -t2 -c50 -d2s "$url" >"$tmp/wrk" 2>&1
    rc=$?
    reqs=$(sed -n 's/^ *\([0-9][0-9]*\) requests in .*/\1/p' "$tmp/wrk")
    if [ $rc -eq 0 ] && [ -n "$reqs" ] && [ "$reqs" -gt 0 ] &&
      ! grep -q 'Socket errors' "$tmp/wrk" && ! grep -q 'Non-2xx' "$tmp/wrk"; then
      ok "http_server wrk -t2 -c50 -d2s: $reqs requests, no errors"
    else
      fail "http_server wrk -t2 -c50 -d2s: no socket errors, only 2xx" \
        "wrk status $rc" "$tmp/wrk"
    fi

    stop_server TERM
    rc=$?
    if [ $rc -eq 0 ]; then
      ok "http_server SIGTERM -> exit 0"
    else
      fail "http_server SIGTERM -> exit 0" "status $rc (124: still running after 5 s)" "$srv_log"
    fi
  fi
fi

# ---- http_server against slow clients --------------------------------------
# Slowloris: under a 64-fd limit, 100 connections send a partial request
# head and then one header byte every 0.5 s. The server takes what its fds
# allow and resets the rest; each one it took gets 408 and is closed 2 s
# (the request timeout) after it came, not before, however it trickles;
# curl requests started once they are gone are all answered. (With the
# timeout out of reach, --request-timeout 1000, none of them is.)
if need "http_server slowloris" curl bash awk; then
  if srv_nofile=64 start_server http_server --request-timeout 2 --idle-timeout 3; then
    timeout 60 bash tests/slowloris.sh "$srv_port" 100 2 >"$tmp/slow" 2>&1
    rc=$?
    v() { sed -n "s/^$1 //p" "$tmp/slow"; }
    first=$(v first_closed)
    closed=$(v slow_closed) refused=$(v slow_refused)
    if [ $rc -eq 0 ] && [ "$(v opened)" = 100 ] && [ "$(v early)" = 0 ] &&
      [ "$(v curl_after)" = 10/10 ] && [ "${closed%/*}" -gt 0 ] &&
      [ $((${closed%/*} + ${refused%/*})) = 100 ] &&
      [ "$(awk "BEGIN { print ($first >= 1.9 && $first <= 3.5) }" 2>/dev/null)" = 1 ] &&
      alive "$srv_pid"; then
      ok "http_server slowloris (100 slow clients, 64 fds): $(tr '\n' ' ' <"$tmp/slow")"
    else
      fail "http_server slowloris (100 slow clients, 64 fds)" "status $rc" "$tmp/slow" "$srv_log"
    fi

    # A keep-alive connection idle for the idle timeout (3 s) is closed.
    expect_raw "http_server idle keep-alive connection closed after --idle-timeout" \
      8 'GET / HTTP/1.1\r\nHost: a\r\n\r\n' 0 'HTTP/1.1 200 OK'
    stop_server TERM
  else
    fail "http_server slowloris" "it did not start" "$srv_log"
  fi
fi

# ---- examples that run by themselves --------------------------------------
# expect_out NAME STATUS PATTERN...: ok NAME when the example's exit STATUS
# is 0 and its output ($tmp/out) has a line matching each PATTERN.
expect_out() {
  name=$1 rc=$2 all=1
  shift 2
  for pattern in "$@"; do
    grep -q "$pattern" "$tmp/out" || all=0
  done
  if [ "$rc" -eq 0 ] && [ $all = 1 ]; then
    ok "$name"
  else
    fail "$name" "status $rc" "$tmp/out"
  fi
}

timeout 10 "$ex/udp_echo" --port 0 >"$tmp/out" 2>&1
expect_out udp_echo $? "^Received 'Hello World!' from 127.0.0.1:" \
  '^Received: Hello World!$'

timeout 10 "$ex/tcp_streams" >"$tmp/out" 2>&1
expect_out tcp_streams $? "^Server received: 'Hello World!'$" \
  "^Client received: 'Hello World!'$"

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
