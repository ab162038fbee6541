# Shell functions that bench/load.sh and bench/soak.sh share: sourced, not
# run. Each script runs in two parts: outside, as root, it checks tools,
# builds and writes its inputs; then it runs itself again inside network and
# PID namespaces of its own (in_namespace), where only loopback exists.

# sinkholed_names PHONEHOME CONFIG OUT: the catalog's telemetry patterns
# that are single host names, kept only when `phonehome check` with CONFIG
# says sinkhole (protected ones never are), one per line in OUT. Wildcard
# patterns are left out: the workloads ask for exact names only. Fails when
# none is left.
sinkholed_names() {
	local ph=$1 config=$2 out=$3
	"$ph" endpoints -category telemetry -format tsv |
		awk -F'\t' 'NR > 1 && $1 !~ /[*]/ && $1 !~ /^[.]/ { print $1 }' >"$out.all"
	# shellcheck disable=SC2046
	"$ph" check -config "$config" $(cat "$out.all") |
		awk '/^[^ ].*: sinkhole$/ { sub(/: sinkhole$/, ""); print }' >"$out"
	if [[ ! -s $out ]]; then
		echo "${0##*/}: phonehome sinkholes none of the telemetry names" >&2
		return 1
	fi
}

# warn_if_busy: other work on the machine takes CPU from the server and the
# load, and shows as noise or latency: say so, with the busiest processes,
# when more than 10% of the machine is busy over a second.
warn_if_busy() {
	local b0 t0 b1 t1
	busy() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 }' /proc/stat; }
	read -r b0 t0 < <(busy)
	sleep 1
	read -r b1 t1 < <(busy)
	if (((b1 - b0) * 100 > (t1 - t0) * 10)); then
		echo "warning: the machine is $(((b1 - b0) * 100 / (t1 - t0)))% busy before the run starts; figures will be noisy. Busiest processes:" >&2
		ps -eo pid,pcpu,etime,args --sort=-pcpu | sed -n '2,4p' | cut -c1-150 >&2
	fi
}

# in_namespace LIMIT VAR=VALUE...: runs the calling script again, with
# those variables set, inside new network and PID namespaces (so no packet
# leaves the machine and every process it starts dies with it), in a
# session of its own (setsid: its own autogroup, which the script's nice
# applies to), stopped after LIMIT seconds. Returns its exit status.
in_namespace() {
	local limit=$1 rc=0
	shift
	env "$@" timeout --kill-after=10 "$limit" setsid -w \
		unshare --net --pid --fork --kill-child --mount-proc bash "${BASH_SOURCE[1]}" &
	_ns_inner=$!
	trap _ns_stop INT TERM
	wait "$_ns_inner" || rc=$?
	trap - INT TERM
	return "$rc"
}

# _ns_stop: interrupted (Ctrl-C, SIGTERM). unshare blocks those signals,
# and the first process of a PID namespace ignores them, so stop the
# namespace the sure way: SIGKILL to its first process (the first of
# in_namespace's descendants in another PID namespace) takes every process
# in it.
# shellcheck disable=SC2317 # called by the trap
_ns_stop() {
	local ours ns p c
	local -a todo=("$_ns_inner")
	ours=$(readlink "/proc/$$/ns/pid")
	while ((${#todo[@]})); do
		p=${todo[0]}
		todo=("${todo[@]:1}")
		ns=$(readlink "/proc/$p/ns/pid" 2>/dev/null) || continue
		if [[ $ns != "$ours" ]]; then
			kill -KILL "$p" 2>/dev/null
			continue
		fi
		c=()
		read -r -a c <"/proc/$p/task/$p/children" 2>/dev/null || true # no newline: read "fails"
		todo+=("${c[@]}")
	done
	wait "$_ns_inner" 2>/dev/null || true
	echo "${0##*/}: interrupted" >&2
	exit 130
}
