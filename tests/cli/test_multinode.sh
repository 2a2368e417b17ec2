#!/usr/bin/env bash
# A multi-node rehearsal on one machine: network namespaces stand in for hosts, each with its
# own address and host name, joined through a bridge (in a namespace of its own, the "switch")
# by one veth link per host. moe-launch runs in the first host: the coordinator listens on that
# host's address and mpirun starts the ranks of every host through an rsh agent that enters the
# host's namespace (ip netns exec), with Open MPI's TCP transport (btl and oob) held to the
# hosts' subnet, so that every byte between ranks and to the coordinator crosses the links. A
# client on the last host runs a 64-prompt batch through the coordinator, which must equal
# moe-run's output of the same file.
#
# Recovery (moe-launch restarting a worker job that lost a rank) is rehearsed by
# cut_link_mid_batch below, once moe-launch has it (its --help lists --max-restarts) or with
# MOE_MN_RECOVERY=1; otherwise the script says that part was not run.
#
#   usage: test_multinode.sh BUILD_BIN_DIR CONFIGS_DIR
#   MOE_MN_HOSTS (2) namespaces standing in for hosts, MOE_MN_RANKS_PER_HOST (1);
#   MOE_MN_KEEP_LOGS=DIR keeps the logs (moe-launch's, the client's, the agent's) there.
# Needs root and `ip netns`; where either is missing it prints SKIPPED and exits 77, which
# CTest reports as skipped (SKIP_RETURN_CODE). Prints ok/FAIL per check; exits 1 on a failure.
# The namespaces, and every process in them, are removed on every way out.
set -u
BIN=$1; CONFIGS=$2
HOSTS=${MOE_MN_HOSTS:-2}
PER_HOST=${MOE_MN_RANKS_PER_HOST:-1}
NP=$((HOSTS * PER_HOST))
SUBNET=10.231.7   # private to these namespaces: nothing of it is seen outside them
PORT=50051
ADDR=$SUBNET.1:$PORT
RANK_TIMEOUT_S=5
P=moe-mn-$$       # namespace prefix: <P>-sw the switch, <P>-h0 .. the hosts

skip() { echo "SKIPPED: $1"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "network namespaces need root (uid $(id -u))"
for tool in ip unshare setsid timeout python3; do
  command -v "$tool" >/dev/null || skip "no '$tool' on this machine"
done
MPIRUN=$(command -v mpirun) || skip "no mpirun on this machine"
for exe in moe-launch moe-cli moe-run moe-worker moe-coordinator; do
  [ -x "$BIN/$exe" ] || { echo "FAIL - $BIN/$exe not built"; exit 1; }
done

TMP=$(mktemp -d)
pass=0; fail=0
ok() { echo "ok   - $1"; pass=$((pass + 1)); }
bad() { echo "FAIL - $1"; fail=$((fail + 1)); }
LAUNCH_PID=
NAMESPACES=()

# Every process still inside one of our namespaces is one this script started (moe-launch,
# mpirun, the ranks, the orted daemons, a client): killed by id, then the namespace goes, and
# with it its end of each veth link.
cleanup() {
  trap - EXIT INT TERM
  [ -n "$LAUNCH_PID" ] && kill -KILL -- "-$LAUNCH_PID" 2>/dev/null
  local ns pid
  for ns in "${NAMESPACES[@]}"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
  done
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null; done
  [ -n "${MOE_MN_KEEP_LOGS:-}" ] && mkdir -p "$MOE_MN_KEEP_LOGS" && cp -r "$TMP"/. "$MOE_MN_KEEP_LOGS"/
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo "interrupted"; exit 1' INT TERM

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
host_ns() { echo "$P-h$1"; }
host_addr() { echo "$SUBNET.$(($1 + 1))"; }

# ---- the network: a bridge in the switch namespace, one veth link per host ---------------------
ip netns add "$P-sw" 2>"$TMP/netns.err" || skip "ip netns add is not permitted here: $(head -1 "$TMP/netns.err")"
NAMESPACES+=("$P-sw")
make_network() {
  in_ns "$P-sw" ip link set lo up &&
  in_ns "$P-sw" ip link add br0 type bridge &&
  in_ns "$P-sw" ip link set br0 up || return 1
  local i ns
  for i in $(seq 0 $((HOSTS - 1))); do
    ns=$(host_ns "$i")
    ip netns add "$ns" || return 1
    NAMESPACES+=("$ns")
    # Made in this namespace under names unique to the run, then each end moved where it
    # belongs: eth0 in the host, s<i> on the bridge.
    ip link add "$P-e$i" type veth peer name "$P-s$i" &&
    ip link set "$P-e$i" netns "$ns" &&
    ip link set "$P-s$i" netns "$P-sw" &&
    in_ns "$ns" ip link set lo up &&
    in_ns "$ns" ip link set "$P-e$i" name eth0 &&
    in_ns "$ns" ip addr add "$(host_addr "$i")/24" dev eth0 &&
    in_ns "$ns" ip link set eth0 up &&
    in_ns "$P-sw" ip link set "$P-s$i" name "s$i" &&
    in_ns "$P-sw" ip link set "s$i" master br0 &&
    in_ns "$P-sw" ip link set "s$i" up || return 1
  done
}
make_network 2>"$TMP/net.err" || { bad "making the network: $(tail -3 "$TMP/net.err")"; exit 1; }

# Each host reaches the others over its link (a TCP connect answered by the peer's listener).
reach() {
  in_ns "$(host_ns "$2")" timeout 10 python3 - "$(host_addr "$1")" <<'PY'
import socket, sys
s = socket.socket()
s.settimeout(8)
try:
    s.connect((sys.argv[1], 9))   # nothing listens: a refusal is the peer answering
except ConnectionRefusedError:
    sys.exit(0)
except OSError as e:
    print(e); sys.exit(1)
PY
}
all_reach=1
for i in $(seq 1 $((HOSTS - 1))); do reach 0 "$i" >/dev/null || all_reach=0; done
[ "$all_reach" = 1 ] && ok "$HOSTS host namespaces reach each other through the bridge" \
  || { bad "hosts cannot reach each other"; exit 1; }

# ---- the rsh agent: Open MPI calls it as `agent [options] HOST COMMAND...` ---------------------
# It enters HOST's namespace and a UTS namespace named after the host, so each orted and its
# ranks see a host name of their own (Open MPI's session folders and locality go by it). Like
# ssh, it hands the remote side none of the caller's environment (only PATH and HOME, as a
# login would set them): what the ranks need must travel through mpirun, as on real hosts.
AGENT=$TMP/netns-rsh
{
  echo '#!/usr/bin/env bash'
  echo 'while [ "${1#-}" != "$1" ]; do shift; done'
  echo 'host=$1; shift'
  echo 'case $host in'
  for i in $(seq 0 $((HOSTS - 1))); do echo "  $(host_addr "$i")) ns=$(host_ns "$i"); name=mnhost$i ;;"; done
  echo '  *) echo "netns-rsh: unknown host $host" >&2; exit 255 ;;'
  echo 'esac'
  echo "echo \"\$host \$*\" >> $TMP/agent.log"
  echo 'exec env -i PATH="$PATH" HOME="${HOME:-/}" ip netns exec "$ns" unshare --uts /bin/sh -c "hostname $name && $*"'
} > "$AGENT"
chmod +x "$AGENT"
HOSTLIST=
for i in $(seq 0 $((HOSTS - 1))); do HOSTLIST="$HOSTLIST${HOSTLIST:+,}$(host_addr "$i"):$PER_HOST"; done
MPI_ARGS="--host $HOSTLIST --mca plm_rsh_agent $AGENT --mca btl self,tcp --mca btl_tcp_if_include $SUBNET.0/24 --mca oob_tcp_if_include $SUBNET.0/24"

# ---- the batch and moe-run's output of it ---------------------------------------------------
# 64 prompts drawn with a fixed seed from the tiny model's vocabulary.
make_prompts() {  # FILE SEED MAX_NEW_LO MAX_NEW_HI [COUNT=64]
  python3 - "$@" <<'PY'
import json, random, sys
path, seed, lo, hi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
count = int(sys.argv[5]) if len(sys.argv) > 5 else 64
rng = random.Random(seed)
with open(path, "w") as out:
    for i in range(count):
        prompt = [rng.randrange(3, 512) for _ in range(rng.randint(2, 40))]
        out.write(json.dumps({"id": i, "prompt_ids": prompt, "max_new_tokens": rng.randint(lo, hi)}) + "\n")
PY
}
make_prompts "$TMP/prompts.jsonl" 11 4 24
timeout 300 "$BIN/moe-run" --config "$CONFIGS/tiny_a.yaml" --input "$TMP/prompts.jsonl" \
  --output "$TMP/reference.jsonl" --no-stats-table --log-level warn 2>"$TMP/run.err"
[ "$(wc -l < "$TMP/reference.jsonl" 2>/dev/null)" = 64 ] && ok "moe-run: 64 reference results" \
  || { bad "moe-run reference: $(tail -3 "$TMP/run.err")"; exit 1; }

# ---- the serving job across the hosts ------------------------------------------------------
LAUNCH_ARGS=(--np "$NP" --config "$CONFIGS/tiny_a.yaml" --listen "$ADDR" --metrics-port 0
             --rank-timeout-s "$RANK_TIMEOUT_S" --startup-timeout-s 120 --mpirun "$MPIRUN"
             --mpirun-args "$MPI_ARGS" --worker-args "--threads 1")
# The recovery part below runs once moe-launch restarts lost worker jobs (--max-restarts in its
# --help), or when MOE_MN_RECOVERY=1 asks for it (then it shows what happens without).
HAS_RESTARTS=0
"$BIN/moe-launch" --help 2>&1 | grep -q -- "--max-restarts" && HAS_RESTARTS=1
RECOVERY=${MOE_MN_RECOVERY:-$HAS_RESTARTS}
[ "$HAS_RESTARTS" = 1 ] && LAUNCH_ARGS+=(--max-restarts 3)

start_launch() {
  # Its own process group (setsid), so cleanup can stop it whole; in host 0's namespace and UTS
  # name, like the orted daemons of the other hosts.
  setsid ip netns exec "$(host_ns 0)" unshare --uts \
    "$BASH" -c 'hostname mnhost0 && exec "$0" "$@"' "$BIN/moe-launch" "${LAUNCH_ARGS[@]}" \
    >"$TMP/launch.out" 2>"$TMP/launch.err" &
  LAUNCH_PID=$!
  for _ in $(seq 1 1500); do
    grep -q "^ready: " "$TMP/launch.out" && return 0
    kill -0 "$LAUNCH_PID" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
t0=$(date +%s)
start_launch && ok "moe-launch ready across $HOSTS hosts ($NP ranks) in $(($(date +%s) - t0)) s" \
  || { bad "moe-launch not ready: $(tail -5 "$TMP/launch.err")"; exit 1; }

# Every host runs its ranks, in its own namespace, started through the agent.
placed=1
for i in $(seq 0 $((HOSTS - 1))); do
  n=0
  for pid in $(ip netns pids "$(host_ns "$i")"); do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = moe-worker ] && n=$((n + 1))
  done
  [ "$n" = "$PER_HOST" ] || { placed=0; echo "  host $i runs $n moe-worker ranks, expected $PER_HOST"; }
done
remote_started=$(grep -c orted "$TMP/agent.log" 2>/dev/null)
[ "$placed" = 1 ] && [ "${remote_started:-0}" -ge $((HOSTS - 1)) ] \
  && ok "each host namespace runs $PER_HOST rank(s); the agent started $remote_started remote orted" \
  || bad "ranks not placed one set per host (agent log: $(head -c 300 "$TMP/agent.log" 2>/dev/null))"

# What crosses the last host's link during the batch: the client's requests, that host's ranks'
# exchanges with the others and their reports to the coordinator.
LAST=$((HOSTS - 1))
link_bytes() {
  in_ns "$(host_ns "$1")" cat /sys/class/net/eth0/statistics/tx_bytes \
    /sys/class/net/eth0/statistics/rx_bytes | awk '{ s += $1 } END { print s + 0 }'
}
before=$(link_bytes "$LAST")
t0=$(date +%s.%N)
in_ns "$(host_ns "$LAST")" timeout 300 "$BIN/moe-cli" --server "$ADDR" batch \
  --input "$TMP/prompts.jsonl" --output "$TMP/served.jsonl" 2>"$TMP/batch.err" \
  && ok "batch of 64 prompts from host $LAST: exit 0 in $(python3 -c "import time; print(f'{time.time() - $t0:.1f}')") s" \
  || bad "batch: $(tr '\r' '\n' < "$TMP/batch.err" | tail -2 | paste -sd' ')"
after=$(link_bytes "$LAST")
cmp -s "$TMP/served.jsonl" "$TMP/reference.jsonl" && ok "served batch == moe-run output" \
  || bad "served batch differs from moe-run: $(diff "$TMP/served.jsonl" "$TMP/reference.jsonl" | head -4)"
[ $((after - before)) -gt 100000 ] && ok "host $LAST's link carried $((after - before)) bytes during the batch" \
  || bad "host $LAST's link carried only $((after - before)) bytes during the batch"

# ---- recovery: a link cut mid-batch ---------------------------------------------------------
# Once moe-launch restarts a worker job that lost a rank: a batch runs from host 0 (the
# coordinator's, so the client is not cut off), the last host's link is cut at the switch once
# results are flowing (its ranks fall silent; nothing on the host itself fails), held down
# until the coordinator has declared the job lost (health NOT_SERVING), then restored as after
# a transient partition, so that the restarted job can place ranks there again. The batch must
# then complete with moe-run's results, and moe-launch must say it restarted the job.
cut_link_mid_batch() {
  # Many prompts: most end at eos well before their budget, and the batch must still be running
  # when the progress line first counts tokens, whatever the machine's speed (600 took under 2 s
  # once the CPU backend got faster; 1500 take about 5 s, 3000 about 10 s: the batch is run
  # again after the restart, so its size is paid twice).
  make_prompts "$TMP/long.jsonl" 12 120 200 1500
  timeout 300 "$BIN/moe-run" --config "$CONFIGS/tiny_a.yaml" --input "$TMP/long.jsonl" \
    --output "$TMP/long_reference.jsonl" --no-stats-table --log-level warn 2>>"$TMP/run.err"
  in_ns "$(host_ns 0)" timeout 300 "$BIN/moe-cli" --server "$ADDR" batch \
    --input "$TMP/long.jsonl" --output "$TMP/long_served.jsonl" 2>"$TMP/long.err" &
  local client=$! started
  started=$(date +%s)
  # Cut once the progress line counts generated tokens: mid-batch, not before it.
  for _ in $(seq 1 1500); do
    grep -qE ', [1-9][0-9]* tokens' "$TMP/long.err" 2>/dev/null && break
    sleep 0.02
  done
  in_ns "$P-sw" ip link set "s$LAST" down
  local cut_at
  cut_at=$(date +%s)
  kill -0 "$client" 2>/dev/null && ok "link of host $LAST cut mid-batch" \
    || bad "the batch ended before the link was cut: $(tr '\r' '\n' < "$TMP/long.err" | tail -1)"
  local lost=0
  for _ in $(seq 1 $(((RANK_TIMEOUT_S + 30) * 5))); do
    in_ns "$(host_ns 0)" timeout 5 "$BIN/moe-cli" --server "$ADDR" health >/dev/null 2>&1
    [ $? -eq 3 ] && { lost=1; break; }
    sleep 0.2
  done
  in_ns "$P-sw" ip link set "s$LAST" up
  [ "$lost" = 1 ] && ok "link of host $LAST cut: job declared lost after $(($(date +%s) - cut_at)) s" \
    || bad "link of host $LAST cut for $(($(date +%s) - cut_at)) s: health never turned NOT_SERVING: $(grep -v ' admitted$' "$TMP/launch.err" | tail -8)"
  wait "$client"; local rc=$?
  [ "$rc" = 0 ] && ok "batch across the cut: exit 0 after $(($(date +%s) - started)) s" \
    || bad "batch across the cut: exit $rc: $(tr '\r' '\n' < "$TMP/long.err" | tail -2 | paste -sd' ')"
  cmp -s "$TMP/long_served.jsonl" "$TMP/long_reference.jsonl" \
    && ok "batch across the cut == moe-run output" || bad "batch across the cut differs from moe-run"
  grep -qi "restart" "$TMP/launch.err" && ok "moe-launch says it restarted the worker job" \
    || bad "moe-launch does not mention a restart: $(tail -3 "$TMP/launch.err")"
  in_ns "$(host_ns 0)" timeout 10 "$BIN/moe-cli" --server "$ADDR" health 2>&1 | grep -q "^SERVING" \
    && ok "serving again after the cut" || bad "not serving after the cut"
}
if [ "$RECOVERY" = 1 ]; then
  cut_link_mid_batch
else
  echo "note - link cut mid-batch not run: moe-launch has no --max-restarts yet (MOE_MN_RECOVERY=1 forces it)"
fi

# ---- stop ----------------------------------------------------------------------------------
kill -TERM "$LAUNCH_PID"
for _ in $(seq 1 600); do kill -0 "$LAUNCH_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$LAUNCH_PID" 2>/dev/null && { echo "  moe-launch still running 60 s after SIGTERM: killed"; kill -KILL -- "-$LAUNCH_PID"; }
wait "$LAUNCH_PID"; rc=$?
LAUNCH_PID=
[ "$rc" -eq 0 ] && ok "moe-launch stops cleanly on SIGTERM" || bad "moe-launch exit $rc: $(tail -5 "$TMP/launch.err")"
left=
for _ in $(seq 1 50); do
  left=
  for i in $(seq 0 $((HOSTS - 1))); do
    for pid in $(ip netns pids "$(host_ns "$i")"); do left="$left $(cat "/proc/$pid/comm" 2>/dev/null)"; done
  done
  [ -z "$left" ] && break
  sleep 0.2
done
[ -z "$left" ] && ok "no process left on any host" || bad "left running:$left"

echo "$pass passed, $fail failed in $SECONDS s"
[ "$fail" -eq 0 ]
