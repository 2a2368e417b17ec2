# Shared by the CLI test scripts (sourced): result counting, expect, a free loopback port, and
# stopping a moe-launch job whole.
pass=0; fail=0
ok() { echo "ok   - $1"; pass=$((pass + 1)); }
bad() { echo "FAIL - $1"; fail=$((fail + 1)); }
# expect CODE NAME STDERR_REGEX -- COMMAND...: the command exits CODE and its stderr matches
# (an empty regex matches anything); its output is left in $TMP/out and $TMP/err.
expect() {
  local code=$1 name=$2 re=$3; shift 4
  "$@" >"$TMP/out" 2>"$TMP/err"; local rc=$?
  if [ "$rc" -ne "$code" ]; then bad "$name: exit $rc, expected $code; stderr: $(tail -3 "$TMP/err")"; return; fi
  if [ -n "$re" ] && ! grep -Eq "$re" "$TMP/err"; then bad "$name: stderr lacks /$re/: $(tail -3 "$TMP/err")"; return; fi
  ok "$name"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Kills moe-launch ($1) and the job serving $2: its children run in process groups of their
# own, so they are found by name too (thawed first, should a test have stopped one), so that
# none outlives a failed test.
kill_launch() {
  pkill -CONT -f "moe-worker --coordinator $2" 2>/dev/null
  kill -KILL "$1" 2>/dev/null
  pkill -KILL -f "moe-worker --coordinator $2" 2>/dev/null
  pkill -KILL -f "moe-coordinator --listen $2" 2>/dev/null
}
