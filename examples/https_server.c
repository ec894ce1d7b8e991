/* The HTTP example (examples/http_server.c: keep-alive, pipelining, flow
   control) over TLS, ALPN http/1.1, until SIGINT or SIGTERM.

       https_server [--port N] --cert F --key F   (default 8080, 127.0.0.1)

   The only difference is the tls option of evl_create_server: every
   accepted connection first does its TLS handshake, and the protocol sees
   an ordinary transport.

   Try it: openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
             -nodes -days 1 -subj /CN=localhost -keyout key.pem -out cert.pem \
             -addext subjectAltName=DNS:localhost
           https_server --cert cert.pem --key key.pem &
           curl --cacert cert.pem https://localhost:8080/

   Build: cc -std=c99 -DEVLOOP_TLS_OPENSSL https_server.c -o https_server \
            -lssl -lcrypto -lpthread
   (or -DEVLOOP_TLS_MBEDTLS ... -lmbedtls -lmbedx509 -lmbedcrypto) */
#define HTTPS_SERVER
#include "http_server.c"
