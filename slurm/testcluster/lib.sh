# Shared by start.sh and stop.sh (sourced).

# alive PIDFILE NAME: the pid in PIDFILE is running and is NAME (guards against pid reuse).
alive() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}
