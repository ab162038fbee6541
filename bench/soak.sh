#!/usr/bin/env bash
# Soak test of issue 11 ("faults under load") and issue 18 item 7 (failover
# the client doesn't feel): phonehome under a steady mixed load from several
# client addresses while, on a schedule, its two upstreams die, crawl, drop
# or fail, its first upstream alone goes silent, its config is reloaded good
# and broken, garbage and a TCP connection flood arrive, one client goes over
# its rate limit, and its query log is rotated. Run from anywhere, as root:
#
#   DURATION=90 bash bench/soak.sh     # the short form (CI): one cycle of 10 phases, under 3 min in all
#   DURATION=1800 bash bench/soak.sh   # the long form: 18 cycles, about 31 min
#   OUT=/tmp/soak bash bench/soak.sh   # also keep the raw outputs (dnsperf, metrics, logs) there
#   HEAP_PROFILE=1 bash bench/soak.sh  # also what grew on phonehome's heap, start to end (go tool pprof)
#
# It needs root, 2 cores and Go; Debian's dnsperf, util-linux (taskset,
# unshare), iproute2 (ip) and curl it installs with apt-get when they are
# missing. It builds phonehome, the stub upstream (internal/stubdns, run
# twice) and the flood (bench/soak/flood).
#
# Everything runs inside a network namespace of its own with only loopback
# (unshare -n), so no packet can leave the machine, and inside a PID
# namespace, so every process it started dies with it. The whole run is
# bounded by `timeout`. phonehome is pinned to CPU 0 (SERVER_CPU); dnsperf,
# the stubs and the flood share CPU 1 (LOAD_CPU); all at nice -19, in a
# session of their own (setsid) whose autogroup is at nice -19 too, so that
# other work on the machine yields to them.
#
# phonehome listens on 127.0.0.1:5301, forwards to two stubs, the first on
# 127.0.0.1:5300 and the second on 127.0.0.1:5302, listed in that order
# (its only upstreams: /etc/resolv.conf is never used), and serves /metrics
# and the API on 127.0.0.1:8053. Each stub has a -fault-file and a log of
# its own. phonehome asks the first upstream, and the second too when the
# first is slower than its hedge delay or backed off. Its config:
# access.allow 127.0.0.0/8, rate_limit RATE_LIMIT (300 q/s per client
# address), a cache of 5,000 answers whose TTLs are cut to 5 s (so that
# cached names expire and are served stale, EDE 3, while the upstreams
# fail), telemetry and a list of ads sinkholed, every query logged to a
# file, and its history database (on by default) in the work directory.
#
# The load: CLIENTS (4) dnsperf processes, one per client address
# (127.0.0.11, .12, ...), each at RATE (100) queries per second, started
# afresh for each phase with names of its own: of every 10 queries, 6 are
# cached names (200 names shared by all clients), 2 unique names (cache
# misses) and 2 sinkholed telemetry names, A and AAAA; half the clients use
# EDNS0. A query without an answer within LOST_AFTER (5) seconds is lost.
#
# The schedule: after a warm-up (a good reload; 5,200 names from 8 other
# addresses, to fill the cache; 15 s of the clients' load with the faults,
# on both stubs, on top of each other, so that phonehome has reached its
# working size; then idle for 2 s, and until the reload's old forwarder is
# retired) the run is DURATION / (10 * PHASE) cycles (at least 1) of ten
# phases of PHASE (10) seconds each:
#   steady     load alone, every upstream healthy;
#   restart    both stubs are killed (SIGKILL) and restarted 3 s later;
#   slow       both stubs answer SLOW_DELAY (1.5 s) late;
#   drop       both stubs answer nothing;
#   servfail   both stubs answer SERVFAIL;
#              (in these four every upstream fails: stale answers and
#              SERVFAILs are expected)
#   failover   the first stub answers nothing, the second answers as
#              ever: phonehome must fail over without the clients feeling
#              it (issue 18 item 7);
#              (slow, drop, servfail and failover each from the phase's
#              start until 2 s before its end; a stub changes its ways on
#              SIGHUP, from its -fault-file, without a restart, so that
#              each phase shows one fault)
#   reload     every 2 s a reload, alternating a good file (two versions in
#              turn) and a broken one (bad YAML, then a bad value), by
#              SIGHUP and by POST /api/reload in turn (which must answer
#              200 for a good file and 422 for a broken one);
#   flood      bench/soak/flood from 20 other addresses (127.0.66.1-20) for
#              PHASE - 2 s: FLOOD_UDP (2,000) garbage datagrams a second and
#              FLOOD_TCP (400) connections kept open (more than phonehome's
#              256 in all and 16 per address: the rest are closed at once);
#   ratelimit  one more client (127.0.0.20) at OVER_RATE (600) q/s, over
#              its limit: its queries over the limit are dropped;
#   rotate     three times: the query log is moved away, then SIGUSR1;
#              a new file must appear within a second.
#
# It reports, per kind of phase (summed over the cycles): queries sent by
# the allowed clients, answered, lost, SERVFAILs and their p99 latency
# (from dnsperf -v); from phonehome's metrics, scraped at each phase's end,
# the answers it sent to every client (phonehome_responses_total), stale
# answers (source="stale": EDE 3), queries dropped by the rate limit
# (phonehome_refused_total{reason="rate_limit"}), the queries it sent
# upstream (phonehome_upstream_requests_total, answers, plus
# phonehome_upstream_errors_total, failures; both upstreams) and the extra
# ones among them (phonehome_upstream_hedges_total: sent to an upstream
# while an earlier one was still awaited), and for the failover phases
# what each upstream answered and which was backed off
# (phonehome_upstream_healthy); the over-limit client apart. Then resident
# memory (VmRSS), Go heap and stacks, goroutines (go_goroutines) and open
# descriptors (/proc/PID/fd) at the start (idle after the warm-up), at the
# end of each cycle (under load) and at the end (idle again, after a
# settle time); and how busy the machine was: phonehome's CPU, other work
# on its core, the time its threads waited for a CPU, and UDP datagrams
# dropped at full receive buffers, by socket. results.tsv (with OUT) has
# all of it per phase, phases.tsv each phase's wall-clock start, to read
# phonehome's log (logs/phonehome.log: "upstream down", "upstream up") by.
#
# It exits 0 only when all of these hold:
#   - no query from an allowed client was lost (the over-limit client's
#     drops are expected and not counted);
#   - in the failover phases the allowed clients got no SERVFAIL and lost
#     no query, and the p99 of their latencies (over all those phases) is
#     at most FAILOVER_P99_MS (300) ms;
#   - in the steady phases the extra upstream queries are at most
#     EXTRA_PCT (10)% of the upstream queries, and every upstream was
#     healthy through them, as that figure assumes (not backed off at
#     their start, none failing in them);
#   - the rate limit dropped queries only in the ratelimit phases (so the
#     allowed clients stayed under it), and did drop some there;
#   - resident memory at the end is less than MEM_GROWTH (10)% above the
#     start;
#   - within SETTLE (15) s of the load's end, goroutines and descriptors are
#     back to at most their start level + GOROUTINE_SLACK (5) and FD_SLACK (5);
#   - phonehome never exited (checked after every phase) and exits 0 on
#     SIGTERM at the end;
#   - every reload did what it should (phonehome_config_reloads_total and
#     the API's status codes), and every rotation gave a new query log.
set -euo pipefail

# Tunables (environment).
DURATION=${DURATION:-90}       # seconds of load: DURATION / (10 * PHASE) cycles of the ten phases, at least one
PHASE=${PHASE:-10}             # seconds per phase
CLIENTS=${CLIENTS:-4}          # allowed client addresses, each with its own dnsperf (at most 8)
RATE=${RATE:-100}              # queries per second per allowed client
RATE_LIMIT=${RATE_LIMIT:-300}  # phonehome's access.rate_limit, per client address
OVER_RATE=${OVER_RATE:-600}    # queries per second of the client over its limit
LOST_AFTER=${LOST_AFTER:-5}    # dnsperf -t: seconds without an answer before a query counts as lost
SLOW_DELAY=${SLOW_DELAY:-1500ms} # how late the slow stubs answer (phonehome gives up on a try after 2 s)
FAILOVER_P99_MS=${FAILOVER_P99_MS:-300} # the failover phases' p99 latency allowed, ms
EXTRA_PCT=${EXTRA_PCT:-10}     # extra upstream queries (hedges) allowed in the steady phases, % of the upstream queries
FLOOD_UDP=${FLOOD_UDP:-2000}   # garbage datagrams a second in the flood phases
FLOOD_TCP=${FLOOD_TCP:-400}    # TCP connections the flood keeps open (phonehome allows 256, 16 per address)
SETTLE=${SETTLE:-15}           # seconds allowed after the load for goroutines and descriptors to return
MEM_GROWTH=${MEM_GROWTH:-10}   # % of resident memory growth allowed, start to end
GOROUTINE_SLACK=${GOROUTINE_SLACK:-5}
FD_SLACK=${FD_SLACK:-5}
SERVER_CPU=${SERVER_CPU:-0}    # core of phonehome
LOAD_CPU=${LOAD_CPU:-1}        # core of dnsperf, the stubs and the flood
NICE=${NICE:--19}
OUT=${OUT:-}                   # keep raw outputs here
HEAP_PROFILE=${HEAP_PROFILE:-0} # 1: heap profiles of phonehome at the start and the end (bench/soak/heapprofile)

STUB_PORT=5300 STUB2_PORT=5302 PH_PORT=5301 HTTP_PORT=8053 # only ever bound on 127.0.0.1 in the namespace
KINDS=(steady restart slow drop servfail failover reload flood ratelimit rotate)
CYCLES=$((DURATION / (${#KINDS[@]} * PHASE)))
((CYCLES >= 1)) || CYCLES=1
if ((CLIENTS < 1 || CLIENTS > 8)); then
	echo "bench/soak.sh: CLIENTS=$CLIENTS: want 1 to 8" >&2
	exit 1
fi
if ((PHASE < 8)); then
	echo "bench/soak.sh: PHASE=$PHASE: want at least 8 seconds" >&2
	exit 1
fi

# ---------------------------------------------------------------------------
# Outside the namespace: check tools, build, write configs, re-execute.
# ---------------------------------------------------------------------------
if [[ -z ${SOAK_INSIDE:-} ]]; then
	here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
	# shellcheck source=bench/lib.sh
	source "$here/lib.sh"
	repo=$(cd "$here/.." && pwd)

	# Step 1: the tools.
	if [[ $(id -u) != 0 ]]; then
		echo "bench/soak.sh: run as root: it makes its own network namespace (unshare -n)" >&2
		exit 1
	fi
	export PATH=$PATH:/usr/sbin
	have() { command -v "$1" >/dev/null; }
	if ! have dnsperf || ! have taskset || ! have unshare || ! have ip || ! have curl; then
		echo "installing dnsperf, util-linux, iproute2 and curl with apt-get..." >&2
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsperf util-linux iproute2 curl >/dev/null
	fi
	missing=()
	have dnsperf || missing+=("dnsperf (Debian package dnsperf)")
	for t in taskset unshare; do have $t || missing+=("$t (Debian package util-linux)"); done
	have ip || missing+=("ip (Debian package iproute2)")
	have curl || missing+=("curl (Debian package curl)")
	have go || missing+=("go (the Go toolchain of go.mod)")
	if ((${#missing[@]})); then
		printf 'bench/soak.sh: missing: %s\n' "${missing[@]}" >&2
		exit 1
	fi
	if [[ $(nproc) -lt 2 ]]; then
		echo "bench/soak.sh: needs 2 cores (phonehome on CPU $SERVER_CPU, load on CPU $LOAD_CPU)" >&2
		exit 1
	fi

	work=$(mktemp -d /tmp/phonehome-soak.XXXXXX)
	trap 'rm -rf "$work"' EXIT
	mkdir -p "$work/bin" "$work/logs" "$work/runs" "$work/metrics" "$work/inputs"
	if [[ -n $OUT ]]; then
		mkdir -p "$OUT"
		OUT=$(cd "$OUT" && pwd)
	fi

	# Step 2: build, here, where the module cache is reachable.
	# With HEAP_PROFILE=1 phonehome gets one more file in its main package,
	# by `go build -overlay` (the source tree is not touched), importing
	# bench/soak/heapprofile: SIGUSR2 then writes a heap profile.
	echo "building phonehome, stubdns and flood..." >&2
	ph_build=()
	if [[ $HEAP_PROFILE == 1 ]]; then
		printf 'package main\n\nimport _ "github.com/phonehome/phonehome/bench/soak/heapprofile"\n' >"$work/soakheap.go"
		printf '{"Replace": {"%s": "%s"}}\n' "$repo/cmd/phonehome/zz_soakheap.go" "$work/soakheap.go" >"$work/overlay.json"
		ph_build=(-overlay "$work/overlay.json")
		mkdir -p "$work/heap"
	fi
	(cd "$repo" && go build "${ph_build[@]}" -o "$work/bin/phonehome" ./cmd/phonehome &&
		go build -o "$work/bin/stubdns" ./internal/stubdns &&
		go build -o "$work/bin/flood" ./bench/soak/flood)

	# Step 3: the configs. Two good versions, reloaded in turn (the second
	# one sinkholes a list of ads names and answers blocks with another
	# TTL), and two broken ones: YAML that does not parse, and a value
	# that does not check. Everything else stays: listen, http, the query
	# log and the rate limit (a changed rate would reset the clients'
	# buckets).
	good() {
		cat <<-EOF
			listen: ["127.0.0.1:$PH_PORT"]
			upstreams: ["127.0.0.1:$STUB_PORT", "127.0.0.1:$STUB2_PORT"]
			http: "127.0.0.1:$HTTP_PORT"
			access:
			  allow: [127.0.0.0/8]
			  rate_limit: $RATE_LIMIT
			sinkhole: {mode: null_ip, ttl: $1}
			cache: {size: 5000, max_ttl: 5s}
			querylog: {output: $work/querylog.json, all_queries: true}
		EOF
	}
	good 60s >"$work/good-0.yaml"
	{
		good 61s
		cat <<-EOF
			policy:
			  default:
			    actions: {telemetry: sinkhole, ads: sinkhole, "*": log}
			    lists:
			      - {category: ads, patterns: [ads.soak.example, "*.tracker.soak.example"]}
		EOF
	} >"$work/good-1.yaml"
	{ good 60s; echo 'access: [127.0.0.0/8'; } >"$work/broken-0.yaml"
	good 60s | sed 's/mode: null_ip/mode: nowhere/' >"$work/broken-1.yaml"
	for f in good-0 good-1; do
		"$work/bin/phonehome" validate -config "$work/$f.yaml" >/dev/null
	done
	for f in broken-0 broken-1; do
		if "$work/bin/phonehome" validate -config "$work/$f.yaml" >/dev/null 2>&1; then
			echo "bench/soak.sh: $f.yaml passes validate; it must not" >&2
			exit 1
		fi
	done
	cp "$work/good-0.yaml" "$work/phonehome.yaml"

	# The names phonehome sinkholes, as bench/load.sh finds them: the
	# catalog's telemetry host names that `phonehome check` says it
	# sinkholes with this config.
	sinkholed_names "$work/bin/phonehome" "$work/phonehome.yaml" "$work/sinkholed"

	warn_if_busy

	# Step 4: the rest inside new network and PID namespaces, bounded in
	# time: the phases, the warm-up, the settle time and a minute to spare.
	limit=$((CYCLES * ${#KINDS[@]} * PHASE + 40 + LOST_AFTER + SETTLE + 60))
	echo "running $CYCLES cycle(s) of ${#KINDS[@]} phases of ${PHASE}s (at most ${limit}s)..." >&2
	rc=0
	in_namespace "$limit" SOAK_INSIDE=1 "SOAK_WORK=$work" "DURATION=$DURATION" "PHASE=$PHASE" "CLIENTS=$CLIENTS" "RATE=$RATE" "RATE_LIMIT=$RATE_LIMIT" \
		"OVER_RATE=$OVER_RATE" "LOST_AFTER=$LOST_AFTER" "SLOW_DELAY=$SLOW_DELAY" "FLOOD_UDP=$FLOOD_UDP" "FLOOD_TCP=$FLOOD_TCP" \
		"SETTLE=$SETTLE" "MEM_GROWTH=$MEM_GROWTH" "GOROUTINE_SLACK=$GOROUTINE_SLACK" "FD_SLACK=$FD_SLACK" \
		"FAILOVER_P99_MS=$FAILOVER_P99_MS" "EXTRA_PCT=$EXTRA_PCT" \
		"SERVER_CPU=$SERVER_CPU" "LOAD_CPU=$LOAD_CPU" "NICE=$NICE" "HEAP_PROFILE=$HEAP_PROFILE" || rc=$?

	# What grew on the heap, start to end (HEAP_PROFILE=1).
	if [[ -s $work/heap/heap.2 ]]; then
		echo
		echo "== what grew on phonehome's heap from the start to the end (live after a collection; go tool pprof -top -base) =="
		(cd "$repo" && go tool pprof -sample_index=inuse_space -top -nodecount=25 -base "$work/heap/heap.1" \
			"$work/bin/phonehome" "$work/heap/heap.2" 2>/dev/null) | sed -n '4,40p'
		echo "== the same, by cumulative size =="
		(cd "$repo" && go tool pprof -sample_index=inuse_space -top -cum -nodecount=25 -base "$work/heap/heap.1" \
			"$work/bin/phonehome" "$work/heap/heap.2" 2>/dev/null) | sed -n '6,40p'
	fi
	if [[ -n $OUT ]]; then
		cp -r "$work/runs" "$work/logs" "$work/metrics" "$work"/*.yaml "$work"/*.tsv "$OUT/" 2>/dev/null || true
		if [[ -d $work/heap ]]; then cp -r "$work/heap" "$work/bin/phonehome" "$OUT/"; fi
		echo "raw outputs kept in $OUT" >&2
	fi
	case $rc in
	0) ;;
	1) echo "bench/soak.sh: FAILED (see above)" >&2 ;;
	124 | 137) echo "bench/soak.sh: FAILED: the run took longer than ${limit}s and was stopped" >&2 ;;
	*) echo "bench/soak.sh: FAILED (exit $rc)" >&2 ;;
	esac
	if ((rc != 0)); then
		echo "last lines of phonehome's log (upstream up/down lines left out):" >&2
		grep -v 'msg="upstream \(up\|down\)"' "$work/logs/phonehome.log" 2>/dev/null | tail -n 10 >&2 || true
	fi
	exit "$rc"
fi

# ---------------------------------------------------------------------------
# Inside the namespaces: only loopback exists here.
# ---------------------------------------------------------------------------
work=$SOAK_WORK
cd "$work"
ip link set lo up
# With autogroup scheduling (kernel.sched_autogroup_enabled), nice ranks
# processes only within their session; the soak runs in a session of its
# own (setsid), whose processes together get the weight of NICE against
# other sessions' work.
if [[ -w /proc/self/autogroup ]]; then
	echo "$NICE" >/proc/self/autogroup 2>/dev/null || true
fi
bin=$work/bin
on_srv=(nice -n "$NICE" taskset -c "$SERVER_CPU")
on_load=(nice -n "$NICE" taskset -c "$LOAD_CPU")
mapfile -t tel <"$work/sinkholed"

# now_ms: the time in milliseconds; sleep_until MS: sleep until then.
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
sleep_until() {
	local d=$(($1 - $(now_ms)))
	((d > 0)) && sleep "$((d / 1000)).$(printf '%03d' $((d % 1000)))"
	return 0
}
say() { printf '[%6.1fs] %s\n' "$((($(now_ms) - t_begin) / 100))e-1" "$*" >&2; }
t_begin=$(now_ms)

# scrape FILE: the metrics this script reads, from /metrics (three tries;
# scrape_failures counts the scrapes that got nothing).
scrape_failures=0
scrape() {
	local try
	for try in 1 2 3; do
		curl -s --max-time 5 "http://127.0.0.1:$HTTP_PORT/metrics" |
			grep -E '^(go_goroutines|go_memstats_heap_inuse_bytes|go_memstats_stack_inuse_bytes|process_open_fds|process_resident_memory_bytes|phonehome_responses_total|phonehome_refused_total|phonehome_tcp_closed_total|phonehome_tcp_connections|phonehome_config_reloads_total|phonehome_querylog_dropped_total|phonehome_upstream_errors_total|phonehome_upstream_requests_total|phonehome_upstream_hedges_total|phonehome_upstream_healthy)[ {]' >"$1" || true
		grep -q '^go_goroutines ' "$1" && return 0
		sleep 0.5
	done
	scrape_failures=$((scrape_failures + 1))
	say "GET /metrics failed three times"
}
# metric FILE NAME [LABELS]: the sum of a metric's series whose labels
# contain LABELS.
metric() { awk -v n="$2" -v l="${3:-}" '{ split($1, a, "{") } a[1] == n && index($1, l) { s += $2 } END { printf "%.0f\n", s }' "$1"; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# host: phonehome's CPU time (utime+stime, all threads, in clock ticks), its
# core's busy and total jiffies (/proc/stat), the UDP datagrams dropped in
# this namespace for want of room in a receive buffer (RcvbufErrors), and
# the time phonehome's threads spent runnable but waiting for a CPU (ms,
# from /proc/PID/task/*/schedstat).
host() {
	echo "$(awk '{ print $14 + $15 }' "/proc/$ph/stat")" \
		"$(awk -v c="cpu$SERVER_CPU" '$1 == c { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 }' /proc/stat)" \
		"$(awk '$1 == "Udp:" && $2 ~ /^[0-9]/ { print $6 }' /proc/net/snmp)" \
		"$(cat /proc/"$ph"/task/*/schedstat 2>/dev/null | awk '{ s += $2 } END { printf "%.0f\n", s / 1e6 }')"
}
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }

# The stub upstreams, on the load core: stub 1 on 127.0.0.1:STUB_PORT,
# phonehome's first upstream, and stub 2 on STUB2_PORT, its second, each
# with a -fault-file (stubN.fault) and a log (logs/stubN.log) of its own.
# stub_start N... starts them, answering, and waits until each listens;
# stub_kill N... kills them (SIGKILL). stub_fault FAULT N... changes how
# they answer (FAULT slow, drop, servfail, or "" for normally) through
# their -fault-files and SIGHUP, without a restart, and waits until each
# says so.
stub_pid=() stub_port=([1]=$STUB_PORT [2]=$STUB2_PORT)
stub_start() {
	local n before=()
	for n in "$@"; do
		: >"$work/stub$n.fault"
		before[n]=$(grep -c listening "$work/logs/stub$n.log" 2>/dev/null || true)
		"${on_load[@]}" "$bin/stubdns" -listen "127.0.0.1:${stub_port[n]}" -fault-file "$work/stub$n.fault" 2>>"$work/logs/stub$n.log" &
		stub_pid[n]=$!
	done
	for n in "$@"; do
		for _ in $(seq 100); do
			(($(grep -c listening "$work/logs/stub$n.log" || true) > before[n])) && continue 2
			sleep 0.02
		done
		echo "stub $n did not start" >&2
		exit 1
	done
}
stub_kill() {
	local n
	for n in "$@"; do kill -KILL "${stub_pid[n]}" 2>/dev/null || true; done
	for n in "$@"; do wait "${stub_pid[n]}" 2>/dev/null || true; done
}
stub_fault() {
	local fault=$1 n before=()
	shift
	for n in "$@"; do
		case $fault in
		slow) echo "slow $SLOW_DELAY" ;;
		*) echo "$fault" ;;
		esac >"$work/stub$n.fault"
		before[n]=$(grep -c '^fault:' "$work/logs/stub$n.log" || true)
		if ! kill -HUP "${stub_pid[n]}" 2>/dev/null; then
			echo "stub $n has exited; its log:" >&2
			tail -n 5 "$work/logs/stub$n.log" >&2
			exit 1
		fi
	done
	for n in "$@"; do
		for _ in $(seq 100); do
			(($(grep -c '^fault:' "$work/logs/stub$n.log" || true) > before[n])) && continue 2
			sleep 0.01
		done
		echo "stub $n did not take the fault ${fault:-none}" >&2
		exit 1
	done
}
stub_start 1 2

# phonehome, on its own core; its query log goes to a file of its own, its
# history database where systemd's StateDirectory would put it: here, in
# the work directory (not in root's home).
mkdir -p "$work/state"
ph_env=("STATE_DIRECTORY=$work/state")
[[ $HEAP_PROFILE == 1 ]] && ph_env+=("PHONEHOME_HEAPDIR=$work/heap")
"${on_srv[@]}" env "${ph_env[@]}" "$bin/phonehome" serve -config "$work/phonehome.yaml" >"$work/logs/phonehome.stdout" 2>"$work/logs/phonehome.log" &
ph=$!
for _ in $(seq 100); do
	curl -s --max-time 1 -o /dev/null "http://127.0.0.1:$HTTP_PORT/readyz" && break
	[[ -e /proc/$ph ]] || break
	sleep 0.1
done
if ! curl -s --max-time 1 -o /dev/null "http://127.0.0.1:$HTTP_PORT/readyz"; then
	echo "phonehome did not start; its log:" >&2
	cat "$work/logs/phonehome.log" >&2
	exit 1
fi
# running PID: the process is there and not a zombie (kill -0 succeeds on
# a zombie until it is waited for).
running() {
	local s
	s=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
	[[ -n $s && $s != Z ]]
}
# alive WHEN: phonehome is still running, or the run fails here, saying
# how it ended: a crash, or a signal from outside the soak (it logs
# "shutting down" then; the soak itself sends SIGTERM only at the end).
alive() {
	running "$ph" && return 0
	local rc=0
	wait "$ph" 2>/dev/null || rc=$?
	echo >&2
	if grep -q 'msg="shutting down"' "$work/logs/phonehome.log"; then
		echo "FAIL: phonehome was stopped $1 by a signal from outside the soak (exit $rc): $(grep 'msg="shutting down"' "$work/logs/phonehome.log" | tail -n 1)" >&2
	else
		echo "FAIL: phonehome exited $1 (exit $rc); the end of its log:" >&2
		grep -v 'msg="upstream \(up\|down\)"' "$work/logs/phonehome.log" | tail -n 30 >&2
	fi
	exit 1
}
# signal SIG: send phonehome a signal, or fail as alive does.
signal() { kill "-$1" "$ph" 2>/dev/null || alive "before SIG$1"; }

# reload J: the J-th reload of a phase. Good (even J) and broken (odd J)
# files in turn, by SIGHUP (J % 4 == 0 or 3) or the API (1 or 2), so that
# both ways see both outcomes; the version of each alternates every other
# phase. The config file is replaced whole (rename), as an editor would.
reloads_good=0 reloads_broken=0 api_calls=0 api_wrong=0
reload() {
	local j=$1 v file code want
	v=$(((j / 2 + ${2:-0}) % 2))
	if ((j % 2 == 0)); then
		file=good-$v want=200 reloads_good=$((reloads_good + 1))
	else
		file=broken-$v want=422 reloads_broken=$((reloads_broken + 1))
	fi
	cp "$work/$file.yaml" "$work/phonehome.yaml.new"
	mv -f "$work/phonehome.yaml.new" "$work/phonehome.yaml"
	case $((j % 4)) in
	0 | 3) signal HUP ;;
	*)
		code=$(curl -s --max-time 10 -o "$work/logs/api-reload.last" -w '%{http_code}' -X POST \
			-H 'Content-Type: application/json' "http://127.0.0.1:$HTTP_PORT/api/reload" || true)
		api_calls=$((api_calls + 1))
		if [[ $code != "$want" ]]; then
			api_wrong=$((api_wrong + 1))
			say "POST /api/reload with $file.yaml answered $code, want $want: $(head -c 300 "$work/logs/api-reload.last")"
		fi
		;;
	esac
}

# rotate: move the query log away and tell phonehome (SIGUSR1), as
# logrotate would; a new file must appear within a second. The old one's
# lines are counted, then it is deleted.
rotations=0 rotations_bad=0 qlog_lines=0
rotate() {
	rotations=$((rotations + 1))
	mv "$work/querylog.json" "$work/querylog.old" 2>/dev/null || true
	signal USR1
	for _ in $(seq 50); do
		[[ -s $work/querylog.json ]] && break
		sleep 0.02
	done
	if [[ ! -s $work/querylog.json ]]; then
		rotations_bad=$((rotations_bad + 1))
		say "no new query log a second after SIGUSR1"
	fi
	sleep 0.2 # lines buffered for the old file are flushed there
	qlog_lines=$((qlog_lines + $(cat "$work/querylog.old" 2>/dev/null | wc -l)))
	rm -f "$work/querylog.old"
}

# gen_input CLIENT PHASE N: N lines of dnsperf input for one client in one
# phase: of every 10, 6 cached names, 2 unique names, 2 sinkholed names.
gen_input() {
	awk -v c="$1" -v p="$2" -v n="$3" -v tf="$work/sinkholed" '
		BEGIN {
			while ((getline l < tf) > 0) tel[nt++] = l
			for (i = 0; i < n; i++) {
				r = i % 10; t = (int(i / 10) % 2) ? "AAAA" : "A"
				if (r < 6) printf "h%d.soak.example A\n", (i * 7 + c * 31) % 200
				else if (r < 8) printf "u%d.p%d.c%d.soak.example %s\n", i, p, c, t
				else printf "%s %s\n", tel[(int(i / 10) + c * 3 + r) % nt], t
			}
		}'
}

# dnsperf_client ADDR RATE FILE OUT [ARGS]: one client for one phase.
dnsperf_client() {
	local addr=$1 rate=$2 in=$3 out=$4
	shift 4
	"${on_load[@]}" dnsperf -s 127.0.0.1 -p "$PH_PORT" -a "$addr" -d "$in" -l "$PHASE" -Q "$rate" \
		-q 2000 -c 1 -t "$LOST_AFTER" -v "$@" >"$out" 2>&1 || true
}

# ---------------------------------------------------------------------------
# Warm-up, to bring phonehome to its working size before the start
# level is taken: a good reload; the cache filled from 8 other addresses;
# then a rehearsal of 15 s of the clients' load in which the faults come
# on top of each other, on both stubs: they are killed and back 1.5 s
# later; for 8 s they answer late (so queries pile up waiting, as they do
# in the fault phases) while the over-limit client and the flood run and a
# broken reload is refused; then they drop every query for 2 s; then 3 s
# of health, so that the first phase does not start on failing upstreams;
# then idle for 2 s, and at least until the good reload's old forwarder is
# retired. Without the rehearsal of every fault, the first cycle's peaks
# would raise the resident memory the Go runtime keeps, which is not
# growth.
# ---------------------------------------------------------------------------
say "phonehome (pid $ph) serving; warming up"
t_warm=$(now_ms)
reload 0 0
{
	for ((i = 0; i < 5000; i++)); do echo "w$i.warm.soak.example A"; done
	for ((i = 0; i < 200; i++)); do echo "h$i.soak.example A"; done
	printf '%s A\n' "${tel[@]}"
} | awk '{ print > ("'"$work"'/inputs/warm." (NR % 8)) }'
warm=()
for k in $(seq 0 7); do
	"${on_load[@]}" dnsperf -s 127.0.0.1 -p "$PH_PORT" -a "127.0.0.$((101 + k))" -d "$work/inputs/warm.$k" -n 1 \
		-Q $((RATE_LIMIT * 3 / 4)) -q 500 -t "$LOST_AFTER" >"$work/runs/warm.$k" 2>&1 &
	warm+=($!)
done
wait "${warm[@]}" || true
t_rehearsal=$(now_ms)
warm=()
for ((c = 1; c <= CLIENTS; c++)); do
	gen_input "$c" 0 $((RATE * 17)) >"$work/inputs/0.c$c"
	PHASE=15 dnsperf_client "127.0.0.$((10 + c))" "$RATE" "$work/inputs/0.c$c" "$work/runs/warm.c$c" &
	warm+=($!)
done
gen_input 9 0 $((OVER_RATE * 9)) >"$work/inputs/0.over"
stub_kill 1 2
sleep_until $((t_rehearsal + 1500))
stub_start 1 2
stub_fault slow 1 2
sleep_until $((t_rehearsal + 2000))
reload 1 0
# The over-limit client's drops are expected: its file is not a warm.* one.
PHASE=8 dnsperf_client 127.0.0.20 "$OVER_RATE" "$work/inputs/0.over" "$work/runs/warmover" &
warm+=($!)
"${on_load[@]}" "$bin/flood" -server "127.0.0.1:$PH_PORT" -from 127.0.66.1 -sources 20 -duration 8s \
	-udp-rate "$FLOOD_UDP" -tcp-conns "$FLOOD_TCP" >"$work/runs/warm.flood" 2>&1 || true
stub_fault drop 1 2
sleep_until $((t_rehearsal + 12000))
stub_fault "" 1 2
wait "${warm[@]}" || true
warm_lost=$(cat "$work"/runs/warm.* | awk '/Queries lost:/ { s += $3 } END { print s + 0 }')
sleep 2
sleep_until $((t_warm + 19000))
alive "after the warm-up"
# Idle means idle: the warm-up's last queries answered and its
# connections closed (at most SETTLE s more), or the goroutine check at
# the end would compare against a busy start.
t_settle=$(now_ms)
while :; do
	scrape "$work/metrics/start"
	(($(metric "$work/metrics/start" go_goroutines) <= 40)) && break
	if (($(now_ms) - t_settle > SETTLE * 1000)); then
		say "warning: $(metric "$work/metrics/start" go_goroutines) goroutines after the warm-up and ${SETTLE}s more"
		break
	fi
	sleep 0.5
done
rss_start=$(rss_kb "$ph") fd_start=$(fds "$ph")
gr_start=$(metric "$work/metrics/start" go_goroutines)
say "start (idle): RSS $((rss_start / 1024)) MB, $gr_start goroutines, $fd_start descriptors; warm-up queries lost: $warm_lost"
# resources POINT CYCLE METRICS: a line of resources.tsv.
resources() {
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$(rss_kb "$ph")" "$(metric "$3" go_goroutines)" "$(fds "$ph")" \
		"$(metric "$3" go_memstats_heap_inuse_bytes)" "$(metric "$3" go_memstats_stack_inuse_bytes)" >>"$work/resources.tsv"
}
printf 'point\tcycle\trss_kb\tgoroutines\tfds\theap_inuse\tstack_inuse\n' >"$work/resources.tsv"
resources start 0 "$work/metrics/start"
# heap_profile N: with HEAP_PROFILE=1, phonehome writes heap.N (after a
# collection), once the levels around it have been taken.
heap_profile() {
	[[ $HEAP_PROFILE == 1 ]] || return 0
	signal USR2
	for _ in $(seq 100); do
		[[ -s $work/heap/heap.$1 ]] && return 0
		sleep 0.05
	done
	say "no heap profile $1"
}
heap_profile 1

# ---------------------------------------------------------------------------
# The phases.
# ---------------------------------------------------------------------------
nphases=$((CYCLES * ${#KINDS[@]}))
printf 'phase\tcycle\tkind\tstart\n' >"$work/phases.tsv"
t_load=$(now_ms)
loads=() # the dnsperf processes started
# host.tsv: per phase, phonehome's CPU use (% of a core), the other work
# on its core (%) and UDP receive-buffer drops.
printf 'phase\tphonehome_cpu\tother_cpu\trcvbuf_errors\trunqueue_ms\n' >"$work/host.tsv"
read -r h_ticks h_busy h_total h_rcv h_wait < <(host)
for ((i = 1; i <= nphases; i++)); do
	kind=${KINDS[(i - 1) % ${#KINDS[@]}]}
	cycle=$(((i - 1) / ${#KINDS[@]} + 1))
	t0=$((t_load + (i - 1) * PHASE * 1000))
	t_end=$((t0 + PHASE * 1000))
	# start: the phase's wall-clock time, to read phonehome's log by.
	printf '%s\t%s\t%s\t%(%H:%M:%S)T.%03d\n' "$i" "$cycle" "$kind" $((t0 / 1000)) $((t0 % 1000)) >>"$work/phases.tsv"
	for ((c = 1; c <= CLIENTS; c++)); do
		gen_input "$c" "$i" $((RATE * PHASE * 12 / 10)) >"$work/inputs/$i.c$c"
	done
	if [[ $kind == ratelimit ]]; then
		gen_input 9 "$i" $((OVER_RATE * PHASE * 12 / 10)) >"$work/inputs/$i.over"
	fi
	sleep_until "$t0"
	if (((i - 1) % ${#KINDS[@]} == 0)); then
		say "cycle $cycle of $CYCLES"
	fi
	for ((c = 1; c <= CLIENTS; c++)); do
		edns=()
		if ((c % 2 == 0)); then edns=(-e); fi
		dnsperf_client "127.0.0.$((10 + c))" "$RATE" "$work/inputs/$i.c$c" "$work/runs/$i.c$c" "${edns[@]}" &
		loads+=($!)
	done
	if [[ $kind == ratelimit ]]; then
		# A second short, so that all its queries fall in this phase.
		PHASE=$((PHASE - 1)) dnsperf_client 127.0.0.20 "$OVER_RATE" "$work/inputs/$i.over" "$work/runs/$i.over" &
		loads+=($!)
	fi

	case $kind in
	restart)
		stub_kill 1 2
		sleep_until $((t0 + 3000))
		stub_start 1 2
		;;
	slow | drop | servfail)
		stub_fault "$kind" 1 2
		sleep_until $((t_end - 2000))
		stub_fault "" 1 2
		;;
	failover)
		# The first upstream silent, the second as ever.
		stub_fault drop 1
		sleep_until $((t_end - 2000))
		stub_fault "" 1
		;;
	reload)
		for ((j = 0; j * 2 < PHASE - 1; j++)); do
			sleep_until $((t0 + j * 2000))
			reload "$j" "$cycle"
		done
		;;
	flood)
		"${on_load[@]}" "$bin/flood" -server "127.0.0.1:$PH_PORT" -from 127.0.66.1 -sources 20 \
			-duration "$((PHASE - 2))s" -udp-rate "$FLOOD_UDP" -tcp-conns "$FLOOD_TCP" \
			>"$work/runs/$i.flood" 2>&1 || echo "flood failed: $(cat "$work/runs/$i.flood")" >&2
		;;
	rotate)
		for ((j = 0; j < 3; j++)); do
			sleep_until $((t0 + 1000 + j * PHASE * 1000 / 3))
			rotate
		done
		;;
	esac
	sleep_until "$t_end"
	alive "in phase $i, $kind"
	scrape "$work/metrics/$i"
	resources "$kind" "$cycle" "$work/metrics/$i"
	read -r n_ticks n_busy n_total n_rcv n_wait < <(host)
	awk -v OFS='\t' -v i="$i" -v t=$((n_ticks - h_ticks)) -v b=$((n_busy - h_busy)) -v a=$((n_total - h_total)) -v r=$((n_rcv - h_rcv)) -v w=$((n_wait - h_wait)) \
		'BEGIN { own = a > 0 ? 100 * t / a : 0; other = a > 0 ? 100 * b / a - own : 0; if (other < 0) other = 0
			printf "%s\t%.0f\t%.0f\t%d\t%d\n", i, own, other, r, w }' >>"$work/host.tsv"
	h_ticks=$n_ticks h_busy=$n_busy h_total=$n_total h_rcv=$n_rcv h_wait=$n_wait
	# Which sockets dropped datagrams (the last column of /proc/net/udp,
	# counted since each socket opened): local address, drops.
	awk -v i="$i" 'function hex(s,  n, k) { for (k = 1; k <= length(s); k++) n = n * 16 + index("0123456789ABCDEF", substr(s, k, 1)) - 1; return n }
		NR > 1 && $NF > 0 { split($2, a, ":"); h = a[1]
			printf "%s\t%d.%d.%d.%d:%d\t%d\n", i, hex(substr(h, 7, 2)), hex(substr(h, 5, 2)), hex(substr(h, 3, 2)), hex(substr(h, 1, 2)), hex(a[2]), $NF }' \
		/proc/net/udp >>"$work/logs/udp-drops.tsv" 2>/dev/null || true
	# Delete inputs already read, to keep the long run's disk use flat.
	rm -f "$work/inputs/$((i - 1)).c"* "$work/inputs/$((i - 1)).over"
done

# ---------------------------------------------------------------------------
# The end: the last queries' answers, then idle until goroutines and
# descriptors are back (at most SETTLE s).
# ---------------------------------------------------------------------------
say "load over; waiting for the last answers and up to ${SETTLE}s for goroutines and descriptors to settle"
wait "${loads[@]}" 2>/dev/null || true
t_idle=$(now_ms)
settled=0
while :; do
	alive "after the load"
	scrape "$work/metrics/end"
	gr_end=$(metric "$work/metrics/end" go_goroutines) fd_end=$(fds "$ph")
	if ((gr_end <= gr_start + GOROUTINE_SLACK && fd_end <= fd_start + FD_SLACK)); then
		settled=1
		break
	fi
	(($(now_ms) - t_idle >= SETTLE * 1000)) && break
	sleep 1
done
settle_s=$((($(now_ms) - t_idle) / 1000))
rss_end=$(rss_kb "$ph")
resources end "$CYCLES" "$work/metrics/end"
heap_profile 2

# Shut down: SIGTERM, and it must exit 0 within 10 s.
kill -TERM "$ph"
ph_rc=
for _ in $(seq 100); do
	running "$ph" || break
	sleep 0.1
done
if running "$ph"; then
	kill -KILL "$ph"
	ph_rc=killed
fi
wait "$ph" && ph_rc=${ph_rc:-0} || ph_rc=${ph_rc:-$?}
stub_kill 1 2

# ---------------------------------------------------------------------------
# The report.
# ---------------------------------------------------------------------------
# Per phase: the allowed clients' counts from dnsperf's statistics, their
# latencies from its per-query lines ("> RCODE name type seconds"), the
# over-limit client's apart; stale answers, rate-limit drops and upstream
# queries from the metrics at the phase's two ends: the queries sent
# upstream (answers plus failures, both upstreams), the extra ones
# (hedges), each upstream's answers and failures, and whether each was
# healthy at the phase's end (phonehome_upstream_healthy: 0 while backed
# off, set when phonehome marks it down or up).
printf 'phase\tcycle\tkind\tsent\tanswered\tlost\tservfail\tother_rcodes\tstale\trate_limited\tover_sent\tover_answered\tover_lost\tmalformed\ttcp_closed_at_once\tp99_ms\tphonehome_answers\tphonehome_cpu\tother_cpu\trcvbuf_errors\trunqueue_ms\tupstream_queries\tupstream_hedges\tupstream1_answers\tupstream1_failures\tupstream2_answers\tupstream2_failures\tupstream1_healthy\tupstream2_healthy\n' >"$work/results.tsv"
up1="upstream=\"127.0.0.1:$STUB_PORT\"" up2="upstream=\"127.0.0.1:$STUB2_PORT\""
prev=$work/metrics/start
while IFS=$'\t' read -r i cycle kind _; do
	[[ $i == phase ]] && continue
	m=$work/metrics/$i
	read -r sent answered lost servfail other < <(awk '
		/Queries sent:/ { s += $3 } /Queries completed:/ { a += $3 } /Queries lost:/ { l += $3 }
		/^> / && $2 == "SERVFAIL" { f++ } /^> / && $2 != "SERVFAIL" && $2 != "NOERROR" && $2 != "T" { o++ }
		END { print s + 0, a + 0, l + 0, f + 0, o + 0 }' "$work/runs/$i".c*)
	awk '/^> / && $2 != "T" { print $NF * 1e3 }' "$work/runs/$i".c* >>"$work/lat.$kind"
	p99=$(awk '/^> / && $2 != "T" { print $NF * 1e3 }' "$work/runs/$i".c* | sort -g |
		awk '{ v[++n] = $1 } END { i = int(n * 0.99 + 0.5); if (i < 1) i = 1; printf "%.1f", n ? v[i] : 0 }')
	over=(0 0 0)
	if [[ -f $work/runs/$i.over ]]; then
		read -r -a over < <(awk '/Queries sent:/ { s = $3 } /Queries completed:/ { a = $3 } /Queries lost:/ { l = $3 }
			END { print s + 0, a + 0, l + 0 }' "$work/runs/$i.over")
	fi
	d() { echo $(($(metric "$m" "$@") - $(metric "$prev" "$@"))); }
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$i" "$cycle" "$kind" \
		"$sent" "$answered" "$lost" "$servfail" "$other" \
		"$(d phonehome_responses_total 'source="stale"')" "$(d phonehome_refused_total 'reason="rate_limit"')" \
		"${over[@]}" "$(d phonehome_refused_total 'reason="malformed"')" \
		"$(($(d phonehome_tcp_closed_total 'reason="limit"') + $(d phonehome_tcp_closed_total 'reason="per_client"')))" \
		"$p99" "$(d phonehome_responses_total)" "$(awk -F'\t' -v i="$i" '$1 == i { print $2 "\t" $3 "\t" $4 "\t" $5 }' "$work/host.tsv")" \
		"$(($(d phonehome_upstream_requests_total) + $(d phonehome_upstream_errors_total)))" "$(d phonehome_upstream_hedges_total)" \
		"$(d phonehome_upstream_requests_total "$up1")" "$(d phonehome_upstream_errors_total "$up1")" \
		"$(d phonehome_upstream_requests_total "$up2")" "$(d phonehome_upstream_errors_total "$up2")" \
		"$(metric "$m" phonehome_upstream_healthy "$up1")" "$(metric "$m" phonehome_upstream_healthy "$up2")" \
		>>"$work/results.tsv"
	prev=$m
done <"$work/phases.tsv"
for k in "${KINDS[@]}"; do
	sort -g "$work/lat.$k" 2>/dev/null | awk -v k="$k" '{ v[++n] = $1 } END { i = int(n * 0.99 + 0.5); if (i < 1) i = 1; printf "%s\t%.1f\n", k, n ? v[i] : 0 }'
done >"$work/p99.tsv"
rm -f "$work"/lat.*

# Datagrams dropped at full receive buffers, by socket: phonehome's
# listening socket, the allowed clients' (dnsperf's), the rest. Each
# socket's count is its last, and sockets closed before a phase's end are
# missed: a lower bound.
udp_drops=$(awk -F'\t' -v ph="127.0.0.1:$PH_PORT" -v n="$CLIENTS" '
	{ last[$2] = $3 }
	END {
		for (a in last) {
			split(a, ip, ":"); split(ip[1], octet, ".")
			if (a == ph) p += last[a]
			else if (ip[1] ~ /^127\.0\.0\./ && octet[4] - 10 >= 1 && octet[4] - 10 <= n) c += last[a]
			else o += last[a]
		}
		printf "%d at phonehome'"'"'s listening socket, %d at the allowed clients'"'"', %d elsewhere", p, c, o
	}' "$work/logs/udp-drops.tsv" 2>/dev/null)
reloads_ok=$(($(metric "$work/metrics/end" phonehome_config_reloads_total 'result="success"') - $(metric "$work/metrics/start" phonehome_config_reloads_total 'result="success"')))
reloads_failed=$(($(metric "$work/metrics/end" phonehome_config_reloads_total 'result="failure"') - $(metric "$work/metrics/start" phonehome_config_reloads_total 'result="failure"')))
# The warm-up's two reloads came before the start scrape.
reloads_good=$((reloads_good - 1)) reloads_broken=$((reloads_broken - 1))
floods=$(cat "$work"/runs/[0-9]*.flood 2>/dev/null | awk '{ for (i = 1; i < NF; i += 2) s[$i] += $(i + 1) } END { printf "%d garbage datagrams (%d answered: the ones that parse get FORMERR), %d TCP connections (%d closed unread at once, %d closed later by phonehome, %d cut by the flood at its end)", s["udp_sent"], s["udp_replies"], s["tcp_dials"], s["tcp_closed_at_once"], s["tcp_closed_later"], s["tcp_open_at_end"] }')
qdrop=$(($(metric "$work/metrics/end" phonehome_querylog_dropped_total) - $(metric "$work/metrics/start" phonehome_querylog_dropped_total)))

export CYCLES PHASE CLIENTS RATE RATE_LIMIT OVER_RATE LOST_AFTER SLOW_DELAY MEM_GROWTH GOROUTINE_SLACK FD_SLACK SETTLE
awk -F'\t' -v p99f="$work/p99.tsv" '
BEGIN {
	while ((getline l < p99f) > 0) { split(l, a, "\t"); p99[a[1]] = a[2] }
	what["steady"] = "load alone"
	what["restart"] = "stubs killed, back after 3 s"
	what["slow"] = "stubs answer " ENVIRON["SLOW_DELAY"] " late"
	what["drop"] = "stubs answer nothing"
	what["servfail"] = "stubs answer SERVFAIL"
	what["failover"] = "first stub silent, second ok"
	what["reload"] = "reload every 2 s, good/broken"
	what["flood"] = "garbage UDP + TCP flood"
	what["ratelimit"] = "one client over its limit"
	what["rotate"] = "query log rotated 3 times"
}
NR == 1 { next }
{
	k = $3; if (!(k in n)) order[++nk] = k
	n[k]++
	for (c = 4; c <= 27; c++) if (c != 16 && (c < 18 || c > 21)) s[k, c] += $c
	# The first upstream backed off at the end of a failover phase; the
	# second at its start (the end of the phase before).
	if (k == "failover") { down1 += !$28; down2 += !prev2 }
	prev2 = $29
}
END {
	printf "\nphonehome soak: %d cycle(s) of %d phases of %d s; %d clients at %d q/s each (rate limit %d), one more at %d q/s in ratelimit phases\n",
		ENVIRON["CYCLES"], nk, ENVIRON["PHASE"], ENVIRON["CLIENTS"], ENVIRON["RATE"], ENVIRON["RATE_LIMIT"], ENVIRON["OVER_RATE"]
	printf "lost: no answer within %d s; stale: answers with EDE 3 (phonehome_responses_total{source=\"stale\"}, all clients)\n\n", ENVIRON["LOST_AFTER"]
	printf "columns: the allowed clients queries sent, answered, lost, SERVFAILs and p99; phonehome answers sent to every client, stale answers,\n"
	printf "queries dropped by the rate limit (phonehome_refused_total{reason=\"rate_limit\"}), queries sent upstream (phonehome_upstream_requests_total\n"
	printf "+ phonehome_upstream_errors_total, both upstreams) and the extra ones among them (phonehome_upstream_hedges_total), from its metrics\n\n"
	fmt = "%-10s %-31s %8s %8s %5s %8s %8s %9s %6s %7s %8s %13s\n"
	printf fmt, "phase", "what", "sent", "answered", "lost", "SERVFAIL", "p99 ms", "phonehome", "stale", "limited", "upstream", "extra"
	for (j = 1; j <= nk; j++) {
		k = order[j]
		printf "%-10s %-31s %8d %8d %5d %8d %8s %9d %6d %7d %8d %13s\n", k, what[k], s[k, 4], s[k, 5], s[k, 6], s[k, 7], p99[k], s[k, 17], s[k, 9], s[k, 10],
			s[k, 22], sprintf("%d (%.1f%%)", s[k, 23], s[k, 22] ? 100 * s[k, 23] / s[k, 22] : 0)
		T4 += s[k, 4]; T5 += s[k, 5]; T6 += s[k, 6]; T7 += s[k, 7]; T9 += s[k, 9]; T10 += s[k, 10]; T17 += s[k, 17]; T22 += s[k, 22]; T23 += s[k, 23]
	}
	printf "%-10s %-31s %8d %8d %5d %8d %8s %9d %6d %7d %8d %13s\n", "all", "", T4, T5, T6, T7, "", T17, T9, T10, T22, sprintf("%d (%.1f%%)", T23, T22 ? 100 * T23 / T22 : 0)
	if (n["failover"])
		printf "\nfailover phases (first upstream silent): the first upstream answered %d queries and failed %d, the second answered %d and failed %d;\n  %d extra upstream queries; the first upstream was backed off at the end of %d of %d, the second at the start of %d (phonehome_upstream_healthy)\n",
			s["failover", 24], s["failover", 25], s["failover", 26], s["failover", 27], s["failover", 23], down1, n["failover"], down2
	if (s["ratelimit", 11] > 0)
		printf "\nthe over-limit client (127.0.0.20, %d q/s): %d sent, %d answered, %d dropped by the rate limit (not counted as lost)\n",
			ENVIRON["OVER_RATE"], s["ratelimit", 11], s["ratelimit", 12], s["ratelimit", 13]
	printf "flood phases: %d malformed datagrams dropped, %d TCP connections over the bounds closed at once (phonehome_tcp_closed_total limit + per_client)\n", s["flood", 14], s["flood", 15]
}' "$work/results.tsv"
[[ -n $floods ]] && echo "the flood's own counts: $floods"
awk -F'\t' 'NR > 1 { n++; c += $18; if ($18 > mc) mc = $18; o += $19; if ($19 > mo) { mo = $19; mk = $3 " (phase " $1 ")" }; r += $20; w += $21; if ($21 > mw) mw = $21 }
	END { if (n) printf "host: phonehome used %.0f%% of its core on average (at most %.0f%% in a phase); other work on its core %.0f%% on average, at most %.0f%% in %s;\n  phonehome waited %.0f ms a phase for a CPU on average (at most %d ms); %d UDP datagrams dropped for want of receive buffer\n", c / n, mc, o / n, mo, mk, w / n, mw, r }' "$work/results.tsv"
echo "UDP datagrams dropped at full receive buffers (/proc/net/udp, sockets open at a phase end): ${udp_drops:-none}"
echo "reloads (after the warm-up): $reloads_ok good, $reloads_failed refused (sent: $reloads_good good, $reloads_broken broken; $api_calls by the API, $api_wrong with a wrong status)"
echo "query log: $rotations rotations, $rotations_bad without a new file; $qlog_lines lines in the rotated files; $qdrop records dropped by the writer"

echo
echo "resources (VmRSS; go_goroutines, go_memstats_heap_inuse_bytes and go_memstats_stack_inuse_bytes; /proc/PID/fd):"
awk -F'\t' '
	function line(what) { printf "  %-28s RSS %6.1f MB  heap %5.1f MB  stacks %4.1f MB  %5d goroutines  %4d descriptors\n", what, $3 / 1024, $6 / 1048576, $7 / 1048576, $4, $5 }
	NR == 1 { next }
	$1 == "start" { line("start (idle, after warm-up)"); next }
	$1 == "end" { line("end (idle)"); next }
	$1 == "rotate" { line("end of cycle " $2 " (under load)") }
	{ if ($3 > maxr) maxr = $3; if ($4 > maxg) maxg = $4; if ($5 > maxf) maxf = $5 }
	END { printf "  %-28s RSS %6.1f MB %37s %5d goroutines  %4d descriptors\n", "most at a phase end", maxr / 1024, "", maxg, maxf }' "$work/resources.tsv"

# The checks.
fail=0
check() { # OK TEXT
	if (($1)); then printf '  ok    %s\n' "$2"; else printf '  FAIL  %s\n' "$2"; fail=1; fi
}
lost=$(awk -F'\t' 'NR > 1 { s += $6 } END { print s + 0 }' "$work/results.tsv")
limited_elsewhere=$(awk -F'\t' 'NR > 1 && $3 != "ratelimit" { s += $10 } END { print s + 0 }' "$work/results.tsv")
limited_there=$(awk -F'\t' 'NR > 1 && $3 == "ratelimit" { s += $10 } END { print s + 0 }' "$work/results.tsv")
growth=$(awk -v a="$rss_start" -v b="$rss_end" 'BEGIN { printf "%+.1f", 100 * (b - a) / a }')
# The failover phases: the allowed clients' queries, lost ones and
# SERVFAILs, and the p99 over all those phases. The steady phases: upstream
# queries and the extra ones (hedges) among them, and whether every
# upstream was healthy through them, as the figure assumes: healthy at a
# phase's start (phonehome_upstream_healthy at the end of the phase before)
# and no upstream failure in it (only a failure backs an upstream off).
read -r fo_sent fo_lost fo_servfail < <(awk -F'\t' 'NR > 1 && $3 == "failover" { s += $4; l += $6; f += $7 } END { print s + 0, l + 0, f + 0 }' "$work/results.tsv")
fo_p99=$(awk -F'\t' '$1 == "failover" { print $2 }' "$work/p99.tsv")
read -r st_up st_extra < <(awk -F'\t' 'NR > 1 && $3 == "steady" { q += $22; h += $23 } END { print q + 0, h + 0 }' "$work/results.tsv")
st_pct=$(awk -v q="$st_up" -v h="$st_extra" 'BEGIN { printf "%.1f", q ? 100 * h / q : 0 }')
read -r st_n st_unhealthy < <(awk -F'\t' -v h1="$(metric "$work/metrics/start" phonehome_upstream_healthy "$up1")" \
	-v h2="$(metric "$work/metrics/start" phonehome_upstream_healthy "$up2")" '
	NR > 1 && $3 == "steady" { n++; if (!(h1 && h2) || $25 || $27) u++ }
	NR > 1 { h1 = $28; h2 = $29 }
	END { print n + 0, u + 0 }' "$work/results.tsv")
echo
echo "checks:"
check "$((lost == 0 && warm_lost == 0))" "no allowed client's query lost: $lost lost in the phases, $warm_lost in the warm-up"
check "$((fo_sent > 0 && fo_lost == 0 && fo_servfail == 0))" "failover phases (first upstream silent): no SERVFAIL and no query lost: $fo_servfail SERVFAILs, $fo_lost lost of $fo_sent sent"
check "$(awk -v p="${fo_p99:-0}" -v m="$FAILOVER_P99_MS" 'BEGIN { print (p <= m) }')" "failover phases' p99 latency: ${fo_p99:-none} ms (limit $FAILOVER_P99_MS ms)"
check "$((st_up > 0 && st_extra * 100 <= EXTRA_PCT * st_up))" "extra upstream queries with every upstream healthy (steady phases): $st_extra of $st_up upstream queries (${st_pct}%, limit ${EXTRA_PCT}%)"
check "$((st_unhealthy == 0))" "every upstream healthy through the steady phases (so the figure above measures hedging): $st_unhealthy of $st_n had an upstream backed off at its start or failing in it"
check "$((limited_elsewhere == 0 && limited_there > 0))" "the rate limit dropped only the over-limit client's queries: $limited_there in ratelimit phases, $limited_elsewhere elsewhere"
check "$(awk -v g="$growth" -v m="$MEM_GROWTH" 'BEGIN { print (g < m) }')" "resident memory from start to end: $((rss_start / 1024)) -> $((rss_end / 1024)) MB (${growth}%, limit +${MEM_GROWTH}%)"
check "$((gr_end <= gr_start + GOROUTINE_SLACK))" "goroutines back to the start level within ${settle_s}s: $gr_start -> $gr_end (slack $GOROUTINE_SLACK)"
check "$((fd_end <= fd_start + FD_SLACK))" "descriptors back to the start level within ${settle_s}s: $fd_start -> $fd_end (slack $FD_SLACK)"
check "$([[ $ph_rc == 0 ]] && echo 1 || echo 0)" "phonehome ran throughout (checked after each phase) and exited $ph_rc on SIGTERM"
check "$((reloads_ok == reloads_good && reloads_failed == reloads_broken && api_wrong == 0))" "reloads: $reloads_ok of $reloads_good good files applied, $reloads_failed of $reloads_broken broken ones refused, API status codes right"
check "$((rotations_bad == 0 && rotations > 0))" "query log rotations: $rotations, each followed by a new file"
check "$((scrape_failures == 0))" "every GET /metrics answered: $scrape_failures failed"
if grep -qE '^(panic|fatal error)' "$work/logs/phonehome.log"; then
	check 0 "phonehome's log has a panic"
fi
((settled)) || echo "  (goroutines or descriptors had not settled after ${SETTLE}s)"
exit "$fail"
