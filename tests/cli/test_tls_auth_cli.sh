#!/usr/bin/env bash
# TLS and API keys end to end: moe-launch with --tls-cert/--tls-key and --api-keys-file; the
# worker job attaches over TLS; moe-cli with --tls-ca and the key is served; without the CA, or
# without or with a wrong key, it is refused with the reason.
#   usage: test_tls_auth_cli.sh BUILD_BIN_DIR CONFIGS_DIR
set -u
BIN=$1; CONFIGS=$2
TMP=$(mktemp -d)
source "$(dirname "$0")/serving_lib.sh"
PORT=$(free_port)
ADDR=127.0.0.1:$PORT
LAUNCH_PID=
cleanup() { [ -n "$LAUNCH_PID" ] && kill_launch "$LAUNCH_PID" "$ADDR"; rm -rf "$TMP"; }
trap cleanup EXIT

# A self-signed certificate for the loopback address, made for this test only.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=localhost" \
  -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
  -keyout "$TMP/key.pem" -out "$TMP/cert.pem" >/dev/null 2>&1 || { bad "openssl could not make a certificate"; exit 1; }
printf '# clients\nkey-tls-alpha-01\n' > "$TMP/keys.txt"

"$BIN/moe-launch" --np 2 --config "$CONFIGS/tiny_a.yaml" --listen "$ADDR" --metrics-port 0 \
  --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem" --api-keys-file "$TMP/keys.txt" \
  >"$TMP/launch.out" 2>"$TMP/launch.err" &
LAUNCH_PID=$!
for _ in $(seq 1 600); do grep -q "^ready: " "$TMP/launch.out" && break; sleep 0.1; done
grep -q "^ready: " "$TMP/launch.out" && ok "moe-launch serves over TLS (the workers attach with the CA)" \
  || { bad "not ready: $(tail -5 "$TMP/launch.err")"; echo "$pass passed, $fail failed"; exit 1; }
grep -q "TLS, 1 API keys" "$TMP/launch.err" && ok "the coordinator says it serves TLS with 1 API key" || bad "no TLS/keys log line"
# The worker secret moe-launch made: in the children's environment, on no command line.
cpid=$(pgrep -f "moe-coordinator --listen $ADDR" | head -1)
secret=$(tr '\0' '\n' < "/proc/$cpid/environ" | sed -n 's/^MOE_WORKER_SECRET=//p')
[ ${#secret} -ge 16 ] && ! ps -eo args | grep -v grep | grep -qF -- "$secret" \
  && ok "the worker secret (${#secret} characters) is on no command line" || bad "secret '${secret}' missing or on a command line"

"$BIN/moe-cli" --server "$ADDR" --tls-ca "$TMP/cert.pem" --api-key key-tls-alpha-01 \
  generate --prompt-ids 183,14,173,485,369,501,64 --max-new-tokens 4 >"$TMP/gen" 2>"$TMP/gen.err"
[ "$(tr '\n' ',' < "$TMP/gen")" = "134,469,461,460," ] && ok "TLS + key: generate streams transformers' tokens" \
  || bad "TLS + key: $(cat "$TMP/gen" "$TMP/gen.err")"
MOE_API_KEY=key-tls-alpha-01 "$BIN/moe-cli" --server "$ADDR" --tls-ca "$TMP/cert.pem" stats >/dev/null 2>&1 \
  && ok "the key from MOE_API_KEY" || bad "MOE_API_KEY not used"

"$BIN/moe-cli" --server "$ADDR" --tls-ca "$TMP/cert.pem" generate --prompt-ids 5 --max-new-tokens 2 >/dev/null 2>"$TMP/nokey"; rc=$?
[ "$rc" -eq 1 ] && grep -q "UNAUTHENTICATED.*API key" "$TMP/nokey" && ok "no key: UNAUTHENTICATED, says a key is needed" || bad "no key: exit $rc $(cat "$TMP/nokey")"
"$BIN/moe-cli" --server "$ADDR" --tls-ca "$TMP/cert.pem" --api-key wrong-key-123 stats >/dev/null 2>"$TMP/wrong"; rc=$?
[ "$rc" -eq 1 ] && grep -q "UNAUTHENTICATED" "$TMP/wrong" && ok "wrong key: UNAUTHENTICATED" || bad "wrong key: exit $rc $(cat "$TMP/wrong")"
timeout 20 "$BIN/moe-cli" --server "$ADDR" --api-key key-tls-alpha-01 stats >/dev/null 2>"$TMP/plain"; rc=$?
[ "$rc" -ne 0 ] && ok "plain text against TLS is refused (exit $rc)" || bad "plain text client was served"

kill -TERM "$LAUNCH_PID"; wait "$LAUNCH_PID"; rc=$?; LAUNCH_PID=
[ "$rc" -eq 0 ] && ok "moe-launch stops cleanly" || bad "moe-launch exit $rc"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
