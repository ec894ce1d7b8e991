#!/bin/sh
# TLS examples against real peers, on loopback (issue 14):
#   sh tests/tls_examples.sh DIR ENGINE
# DIR holds https_server, tls_client and starttls built with ENGINE. Checks:
# curl --cacert and openssl s_client as clients of https_server (keep-alive,
# ALPN http/1.1), tls_client against https_server and against openssl
# s_server, tls_client refusing an unknown CA, and the starttls demo.
# Prints "ok   NAME" / "FAIL NAME" per check, then "N passed, N failed".
dir=${1:?usage: sh tests/tls_examples.sh DIR ENGINE} engine=${2:-?}
passed=0 failed=0 pids=""
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tls_examples.XXXXXX") || exit 1
cleanup() {
  for p in $pids; do kill -KILL "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM
ok() { passed=$((passed + 1)); echo "ok   $engine: $1"; }
fail() {
  failed=$((failed + 1)); echo "FAIL $engine: $1"
  [ -f "$2" ] && head -c 3000 "$2" | sed 's/^/    /'
}
# check NAME FILE PATTERN: FILE has a line matching PATTERN (grep -E).
check() { if grep -Eq "$3" "$2"; then ok "$1"; else fail "$1" "$2"; fi; }

for tool in openssl curl; do
  command -v $tool >/dev/null 2>&1 || { echo "FAIL $engine: $tool is missing"; echo "0 passed, 1 failed"; exit 1; }
done
# A self-signed certificate for localhost and 127.0.0.1, and another one
# (an unknown CA for the clients).
mk() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -days 2 -subj /CN=localhost -keyout "$tmp/$1.key" -out "$tmp/$1.pem" \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
}
mk cert && mk other || { echo "FAIL $engine: openssl req"; echo "0 passed, 1 failed"; exit 1; }

# A free port: ask the kernel through the server itself (--port 0).
"$dir/https_server" --port 0 --cert "$tmp/cert.pem" --key "$tmp/cert.key" >"$tmp/srv.out" 2>&1 &
pids="$pids $!"
i=0
while ! grep -q listening "$tmp/srv.out" && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
port=$(sed -n 's/.*127.0.0.1:\([0-9]*\).*/\1/p' "$tmp/srv.out" | head -n 1)
[ -n "$port" ] || { fail "https_server starts" "$tmp/srv.out"; echo "$passed passed, $failed failed"; exit 1; }

timeout 20 curl -sv --http1.1 --cacert "$tmp/cert.pem" "https://localhost:$port/" "https://localhost:$port/" >"$tmp/curl.body" 2>"$tmp/curl.out"
check "curl --cacert: two requests on one connection" "$tmp/curl.out" 'Re-using existing connection|Reusing existing connection'
check "curl --cacert: the answer" "$tmp/curl.body" '^Hello, World!Hello, World!$'
check "curl --cacert: ALPN http/1.1" "$tmp/curl.out" 'ALPN.*http/1.1'
timeout 20 curl -s --cacert "$tmp/other.pem" "https://localhost:$port/" >"$tmp/curl2.out" 2>&1
[ $? -eq 60 ] && ok "curl refuses an unknown CA (exit 60)" || fail "curl refuses an unknown CA (exit 60)" "$tmp/curl2.out"

printf 'GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' |
  timeout 20 openssl s_client -connect "127.0.0.1:$port" -servername localhost \
    -CAfile "$tmp/cert.pem" -alpn http/1.1 -verify_return_error -ign_eof >"$tmp/sc.out" 2>&1
check "openssl s_client: verified" "$tmp/sc.out" 'Verify return code: 0 \(ok\)'
check "openssl s_client: ALPN" "$tmp/sc.out" 'ALPN protocol: http/1.1'
check "openssl s_client: the answer" "$tmp/sc.out" 'Hello, World!'

timeout 20 "$dir/tls_client" --cafile "$tmp/cert.pem" localhost "$port" / >"$tmp/tc.out" 2>&1
check "tls_client -> https_server" "$tmp/tc.out" '^HTTP/1.1 200 OK'
timeout 20 "$dir/tls_client" --cafile "$tmp/other.pem" localhost "$port" / >"$tmp/tc2.out" 2>&1
[ $? -eq 1 ] && grep -q 'unknown CA' "$tmp/tc2.out" && ok "tls_client refuses an unknown CA" || fail "tls_client refuses an unknown CA" "$tmp/tc2.out"

# openssl s_server as the server of tls_client (port 0: it prints its own)
openssl s_server -accept 0 -cert "$tmp/cert.pem" -key "$tmp/cert.key" -www -naccept 1 >"$tmp/ss.out" 2>&1 &
pids="$pids $!"
i=0
while ! grep -q '^ACCEPT' "$tmp/ss.out" && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
sport=$(sed -n 's/^ACCEPT .*:\([0-9]*\)$/\1/p' "$tmp/ss.out" | head -n 1)
timeout 20 "$dir/tls_client" --cafile "$tmp/cert.pem" localhost "${sport:-1}" / >"$tmp/tc3.out" 2>&1
check "tls_client -> openssl s_server" "$tmp/tc3.out" '^HTTP/1.0 200 ok'

timeout 20 "$dir/starttls" >"$tmp/st.out" 2>&1
check "starttls demo" "$tmp/st.out" 'client \(TLS\) got: 221 bye'

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
