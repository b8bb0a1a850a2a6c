#!/bin/bash
# systemctl stand-in for rebox lab servers, which have no systemd (the lab's PID 1 is a shell).
# Contract followed: systemctl(1) for the verbs rebox uses — daemon-reload, enable/disable
# [--now], start, stop, restart, is-active [--quiet], is-enabled, status — on units found in
# /etc/systemd/system, /lib/systemd/system, /usr/lib/systemd/system. A started unit runs its
# ExecStart (after EnvironmentFile= and ExecStartPre=) as a supervised process group; with
# Restart=always it is restarted after RestartSec when it dies, as systemd would.
# Left out: dependencies, Type=notify readiness (start returns at once: wait on the service
# itself), cgroups, timers, sockets, the journal (each unit logs to /var/log/lab-systemd/UNIT.log).
set -u
state=/run/lab-systemd
logs=/var/log/lab-systemd
[ "$(id -u)" = 0 ] && mkdir -p "$state" "$logs"

name() { case $1 in *.*) echo "$1" ;; *) echo "$1.service" ;; esac; }
file_of() {
  local n d; n=$(name "$1")
  for d in /etc/systemd/system /lib/systemd/system /usr/lib/systemd/system; do
    [ -f "$d/$n" ] && { echo "$d/$n"; return 0; }
  done
  return 1
}
values() { sed -n "s/^[[:space:]]*$2=//p" "$1"; }
pid_of() { cat "$state/$(name "$1").pid" 2>/dev/null; }
# /proc, not kill -0: unprivileged users may ask about root's services too.
active() { local p; p=$(pid_of "$1") && [ -n "$p" ] && [ -d "/proc/$p" ]; }

start() {
  local n f; n=$(name "$1")
  f=$(file_of "$1") || { echo "Failed to start $n: Unit $n not found." >&2; return 5; }
  active "$1" && return 0
  rm -f "$state/$n.stop"
  local exec_start restart delay
  exec_start=$(values "$f" ExecStart | tail -n 1); exec_start=${exec_start#-}
  restart=$(values "$f" Restart | tail -n 1)
  delay=$(values "$f" RestartSec | tail -n 1); delay=${delay%s}; delay=${delay:-1}
  [ -n "$exec_start" ] || { echo "Failed to start $n: no ExecStart=" >&2; return 1; }
  # The supervisor: environment files, pre-commands, then the service, restarted if asked.
  {
    echo 'set -a'
    values "$f" EnvironmentFile | while read -r env; do
      env=${env#-}; env=${env//%N/${n%.service}}; echo "[ -r '$env' ] && . '$env'"
    done
    echo 'set +a'
    values "$f" ExecStartPre | while read -r pre; do
      case $pre in -*) echo "${pre#-} || true" ;; *) echo "$pre || exit 1" ;; esac
    done
    echo "while :; do"
    echo "  $exec_start"
    echo "  [ -e '$state/$n.stop' ] && exit 0"
    if [ "$restart" = always ] || [ "$restart" = on-failure ]; then
      echo "  echo \"lab-systemd: $n exited (\$?), restarting in ${delay}s\"; sleep $delay"
    else
      echo "  exit"
    fi
    echo "done"
  } >"$state/$n.run"
  setsid bash "$state/$n.run" >>"$logs/$n.log" 2>&1 </dev/null &
  echo $! >"$state/$n.pid"
}

stop() {
  local n p; n=$(name "$1")
  p=$(pid_of "$1") || return 0
  touch "$state/$n.stop"
  kill -TERM -- "-$p" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
  kill -KILL -- "-$p" 2>/dev/null
  rm -f "$state/$n.pid"
}

wants() { echo "/etc/systemd/system/multi-user.target.wants/$(name "$1")"; }

now=0 quiet=0 args=()
for a in "$@"; do
  case $a in
    --now) now=1 ;;
    --quiet | -q) quiet=1 ;;
    --no-pager | --no-block | -l | --full) ;;
    *) args+=("$a") ;;
  esac
done
verb=${args[0]:-}
units=("${args[@]:1}")
rc=0
case $verb in
  daemon-reload | reset-failed) ;;
  enable)
    for u in "${units[@]}"; do
      f=$(file_of "$u") || { echo "Failed to enable unit: Unit file $(name "$u") does not exist." >&2; exit 1; }
      mkdir -p "$(dirname "$(wants "$u")")"; ln -sf "$f" "$(wants "$u")"
      [ $now = 1 ] && { start "$u" || rc=$?; }
    done ;;
  disable)
    for u in "${units[@]}"; do rm -f "$(wants "$u")"; [ $now = 1 ] && stop "$u"; done ;;
  start) for u in "${units[@]}"; do start "$u" || rc=$?; done ;;
  stop) for u in "${units[@]}"; do stop "$u"; done ;;
  restart) for u in "${units[@]}"; do stop "$u"; start "$u" || rc=$?; done ;;
  is-active)
    for u in "${units[@]}"; do
      if active "$u"; then [ $quiet = 1 ] || echo active; else [ $quiet = 1 ] || echo inactive; rc=3; fi
    done ;;
  is-enabled)
    for u in "${units[@]}"; do
      if [ -L "$(wants "$u")" ]; then [ $quiet = 1 ] || echo enabled; else [ $quiet = 1 ] || echo disabled; rc=1; fi
    done ;;
  status)
    for u in "${units[@]}"; do
      n=$(name "$u")
      if active "$u"; then echo "● $n - active (running) since lab start, main PID $(pid_of "$u")"; else echo "○ $n - inactive (dead)"; rc=3; fi
      tail -n 10 "$logs/$n.log" 2>/dev/null
    done ;;
  *) echo "lab systemctl: '$verb' is not supported by the lab's stand-in" >&2; exit 1 ;;
esac
exit $rc
