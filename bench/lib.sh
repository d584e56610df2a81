# Shared helpers for the bench/ scripts (sourced, not run).

now() { date +%s.%N; }
# Seconds from $1 to $2 (timestamps from `now`), two decimals.
elapsed() { echo "$1 $2" | awk '{ printf "%.2f\n", $2 - $1 }'; }
# The median of the numbers on stdin.
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
# "median min max" of the numbers on stdin (empty if there are none).
stats() { sort -n | awk '{ a[NR] = $1 } END { if (NR) printf "%s %s %s", a[int((NR + 1) / 2)], a[1], a[NR] }'; }

# Polls GET http://127.0.0.1:$1$2 until it answers 2xx; prints the seconds
# since $3 (a `now` timestamp), or "fail" after $4 seconds or once process
# $5 (if given) has exited.
wait_http() {
    deadline=$(( $(date +%s) + $4 ))
    while [ "$(date +%s)" -lt $deadline ]; do
        if [ -n "${5:-}" ] && ! kill -0 "$5" 2>/dev/null; then
            break
        fi
        if curl -fs --max-time 1 "http://127.0.0.1:$1$2" >/dev/null 2>&1; then
            elapsed "$3" "$(now)"
            return
        fi
        sleep 0.05
    done
    echo fail
}

# nodeos's cache directory, as `nodeos build` finds it.
nodeos_cache_dir() { echo "${NODEOS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nodeos}"; }

# A nodeos cache directory at $1 that shares this user's downloads and kernel
# builds but has no runtime layers, so a build in it packs them afresh.
fresh_cache() {
    mkdir -p "$1"
    for entry_dir in "$(nodeos_cache_dir)"/*; do
        [ -e "$entry_dir" ] || continue
        [ "$(basename "$entry_dir")" = layers ] || ln -sfn "$(realpath "$entry_dir")" "$1/"
    done
}

# Times `nodeos build` of the project copy $1 into $3 with --profile $4:
# first cold, in a fresh cache $6 (see fresh_cache), then $5 rebuilds, each
# after appending a comment line to the file $2 of the project. Prints the
# seconds, one line per build, the cold build first.
build_times() {
    fresh_cache "$6"
    _i=0
    while [ $_i -le "$5" ]; do
        [ $_i -eq 0 ] || echo "// edit $4 $_i" >>"$1/$2"
        _t0=$(now)
        NODEOS_CACHE_DIR="$6" target/release/nodeos -q build "$1" --out "$3" --profile "$4" >&2
        elapsed "$_t0" "$(now)"
        _i=$((_i + 1))
    done
}

# Starts `nodeos run IMAGE` in the background with host port $2 forwarded to
# the app's 3000 and --memory $3 MiB; the console goes to $4, further
# arguments go to `nodeos run`. Sets $vm_pid and $vm_start (a `now`).
nodeos_start() {
    _image=$1 _port=$2 _memory=$3 _console=$4
    shift 4
    vm_start=$(now)
    target/release/nodeos -q run "$_image" -p "$_port:3000" --memory "$_memory" "$@" >"$_console" 2>&1 &
    vm_pid=$!
}

# Stops the VM nodeos_start started (the guest powers off gracefully).
nodeos_stop() {
    kill -INT "$vm_pid" 2>/dev/null || true
    wait "$vm_pid" 2>/dev/null || true
}
