#!/usr/bin/env bash
# A real Docker engine and a real registry for the tests, all state in one folder.
#
#   scripts/services.sh install   Debian packages (docker.io, docker-registry, busybox-static, tmux, entr,
#                                 inotify-tools, chromium, chromium-driver)
#   scripts/services.sh start     two engines + registry + busybox base image; idempotent
#   scripts/services.sh stop      stop all three by pid, unmount leftovers; idempotent
#   scripts/services.sh env       print DOCKER_HOST / CIW_DOCKER_HOST_2 / CIW_REGISTRY:
#                                 eval "$(scripts/services.sh env)"
#
# The second engine stands for a shared or remote one (a Cluster's connection.docker.host): its
# own data, on a loopback TCP port (CIW_ENGINE2_PORT, default 23750), never on another address.
#
# Nothing goes to /etc or /var/lib: see /work/shared/REAL-DOCKER.md for why each flag is here.
set -euo pipefail

# Short on purpose: docker.sock lives here and unix socket paths are limited to 108 bytes.
# CIW_SERVICES_DIR and CIW_REGISTRY_PORT let a second checkout run its own pair.
D="${CIW_SERVICES_DIR:-/tmp/cmdimage-watch-services}"
SOCK="$D/docker.sock"
ENGINE1_HOST="unix://$SOCK"
ENGINE2_DIR="$D/engine2"
ENGINE2_HOST="tcp://127.0.0.1:${CIW_ENGINE2_PORT:-23750}"
REGISTRY_PIDFILE="$D/registry.pid"
REGISTRY_PORT="${CIW_REGISTRY_PORT:-5000}"
REGISTRY_LISTEN="127.0.0.1:$REGISTRY_PORT"
# The engine treats a registry as insecure (plain HTTP allowed) when its host resolves into
# 127.0.0.0/8, so "localhost:5000" works as well as "127.0.0.1:5000"; it is Tilt's default.
REGISTRY_HOST="localhost:$REGISTRY_PORT"
BASE_IMAGE="cmdimage-watch/busybox:latest"
PACKAGES=(docker.io docker-registry busybox-static tmux entr inotify-tools chromium chromium-driver)  # tmux: the terminal tests; entr, inotify-tools: the bench's peer and floor; chromium: the dashboard's browser test
READY_TIMEOUT_S=30
STOP_TIMEOUT_S=15

log() { printf 'services: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# docker_cli HOST ARGS...
docker_cli() {
  local host=$1 cli=/usr/bin/docker  # the 20.10 CLI from docker.io, matching the engine
  shift
  [[ -x $cli ]] || cli=/usr/local/bin/docker
  DOCKER_HOST="$host" "$cli" "$@"
}

# --- install -----------------------------------------------------------------------------

missing_packages() {
  local pkg
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
      || echo "$pkg"
  done
  command -v curl >/dev/null || echo curl
}

cmd_install() {
  local missing
  mapfile -t missing < <(missing_packages)
  ((${#missing[@]} == 0)) && return 0
  local sudo=()
  ((EUID == 0)) || sudo=(sudo)
  log "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# --- process helpers -----------------------------------------------------------------------

# Prints the pid in FILE if that process is alive, runs NAME and names $D on its command
# line: a stale pidfile must never make us signal somebody else's process.
live_pid() {
  local file=$1 name=$2 pid cmdline
  [[ -s $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
  [[ $cmdline == *"$name"*"$D/"* ]] || return 1
  echo "$pid"
}

# wait_until TIMEOUT_S PID CHECK...: true once CHECK succeeds; false on timeout or if PID dies.
wait_until() {
  local timeout_s=$1 pid=$2
  shift 2
  local deadline=$((SECONDS + timeout_s))
  until "$@"; do
    kill -0 "$pid" 2>/dev/null || return 1
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
}

# terminate PID NAME: SIGTERM, bounded wait, then SIGKILL; all by pid.
terminate() {
  local pid=$1 name=$2
  kill -TERM "$pid" 2>/dev/null || return 0
  local deadline=$((SECONDS + STOP_TIMEOUT_S))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
  kill -0 "$pid" 2>/dev/null || return 0
  log "$name (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT_S}s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
}

# stop_pidfile FILE NAME: terminate the live NAME process recorded in FILE, if any.
stop_pidfile() {
  local file=$1 name=$2 pid
  if pid=$(live_pid "$file" "$name"); then terminate "$pid" "$name"; fi
  rm -f "$file"
}

# --- engines -------------------------------------------------------------------------------
# Each engine is a folder (data root, exec root, pidfile, log) and the address it listens on.
# Engine 1 keeps its files in $D itself, where earlier versions of this script put them.

engine_answers() {
  local host=$1
  case $host in
    unix://*) curl -fsS --max-time 2 --unix-socket "${host#unix://}" http://docker/_ping ;;
    tcp://*) curl -fsS --max-time 2 "http://${host#tcp://}/_ping" ;;
  esac >/dev/null 2>&1
}

# start_dockerd DIR HOST DRIVER: true once the engine answers _ping; false if it exits or times out.
start_dockerd() {
  local dir=$1 host=$2 driver=$3
  printf '{"deprecated-key-path": "%s/key.json"}\n' "$dir" >"$dir/daemon.json"
  mkdir -p "$dir/root" "$dir/exec"
  # setsid + closed stdio: the engine must outlive this script and not hold its pipes open,
  # nor the start lock (fd 9), which would keep every later start waiting.
  setsid /usr/sbin/dockerd --config-file "$dir/daemon.json" --storage-driver="$driver" \
    --iptables=false --ip6tables=false --bridge=none \
    --data-root "$dir/root" --exec-root "$dir/exec" --pidfile "$dir/exec/dockerd.pid" \
    --host "$host" </dev/null >"$dir/dockerd.log" 2>&1 9>&- &
  local pid=$!
  if wait_until "$READY_TIMEOUT_S" "$pid" engine_answers "$host"; then
    echo "$driver" >"$dir/storage-driver"
    return 0
  fi
  terminate "$pid" dockerd
  stop_engine "$dir"
  return 1
}

# ensure_engine DIR HOST
ensure_engine() {
  local dir=$1 host=$2
  mkdir -p "$dir"
  if live_pid "$dir/exec/dockerd.pid" dockerd >/dev/null && engine_answers "$host"; then
    return 0
  fi
  stop_engine "$dir"
  [[ $host != tcp://* ]] || ! engine_answers "$host" \
    || die "something else answers on $host; stop it, or set CIW_ENGINE2_PORT, and retry"
  # overlay2 is ten times faster on RUN steps; vfs works on any filesystem. The driver that
  # worked last time goes first, so its images stay visible.
  local first second
  first=$(cat "$dir/storage-driver" 2>/dev/null || echo overlay2)
  second=$([[ $first == vfs ]] && echo overlay2 || echo vfs)
  start_dockerd "$dir" "$host" "$first" && return 0
  mv "$dir/dockerd.log" "$dir/dockerd-$first.log"
  log "dockerd --storage-driver=$first failed (see $dir/dockerd-$first.log); trying $second"
  start_dockerd "$dir" "$host" "$second" && return 0
  log "dockerd did not answer within ${READY_TIMEOUT_S}s; last lines of $dir/dockerd.log:"
  tail -n 20 "$dir/dockerd.log" >&2
  exit 1
}

# stop_engine DIR
stop_engine() {
  local dir=$1
  stop_pidfile "$dir/exec/dockerd.pid" dockerd
  # dockerd normally stops its own containerd; this catches one left by a SIGKILLed engine.
  stop_pidfile "$dir/exec/containerd/containerd.pid" containerd
  unmount_under "$dir/root"
  unmount_under "$dir/exec"
}

# unmount_under PATH: every mount at or below PATH, deepest first, so parents are not busy
# when their turn comes.
unmount_under() {
  local mnt
  awk -v d="$1" 'index($2, d "/") == 1 || $2 == d { print $2 }' /proc/mounts \
    | awk '{ print length, $0 }' | sort -rn | cut -d' ' -f2- \
    | while read -r mnt; do
      umount "$mnt" 2>/dev/null || umount -l "$mnt" || log "could not unmount $mnt"
    done
}

# --- registry ------------------------------------------------------------------------------

registry_answers() {
  curl -fsS --max-time 2 "http://$REGISTRY_LISTEN/v2/" >/dev/null 2>&1
}

write_registry_config() {
  local secret
  secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  cat >"$D/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $D/registry}, delete: {enabled: true}}
http: {addr: $REGISTRY_LISTEN, secret: $secret}
EOF
}

ensure_registry() {
  if live_pid "$REGISTRY_PIDFILE" docker-registry >/dev/null && registry_answers; then
    return 0
  fi
  stop_pidfile "$REGISTRY_PIDFILE" docker-registry
  registry_answers && die "something else answers on $REGISTRY_LISTEN; stop it and retry"
  mkdir -p "$D/registry"
  write_registry_config
  setsid /usr/bin/docker-registry serve "$D/registry.yml" \
    </dev/null >"$D/registry.log" 2>&1 9>&- &
  local pid=$!
  echo "$pid" >"$REGISTRY_PIDFILE"
  wait_until "$READY_TIMEOUT_S" "$pid" registry_answers && return 0
  log "registry did not answer on $REGISTRY_LISTEN; last lines of $D/registry.log:"
  tail -n 20 "$D/registry.log" >&2
  terminate "$pid" docker-registry
  exit 1
}

# --- base image ----------------------------------------------------------------------------

# Nothing can be pulled here (no DNS), so the base image is busybox-static, imported.
# ensure_base_image HOST
ensure_base_image() {
  local host=$1
  docker_cli "$host" image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return 0
  local rootfs applet
  rootfs=$(mktemp -d "$D/rootfs.XXXXXX")
  mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/etc" "$rootfs/root"
  chmod 1777 "$rootfs/tmp"
  cp /bin/busybox "$rootfs/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [[ $applet == busybox ]] || ln -s busybox "$rootfs/bin/$applet"
  done
  tar -C "$rootfs" --numeric-owner --owner=0 --group=0 -cf - . \
    | docker_cli "$host" import -c 'CMD ["/bin/sh"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
}

# --- commands ------------------------------------------------------------------------------

write_env() {
  printf 'export DOCKER_HOST=%s\nexport CIW_DOCKER_HOST_2=%s\nexport CIW_REGISTRY=%s\n' \
    "$ENGINE1_HOST" "$ENGINE2_HOST" "$REGISTRY_HOST" >"$D/env.tmp"
  mv "$D/env.tmp" "$D/env"
}

cmd_start() {
  local tool
  for tool in /usr/sbin/dockerd /usr/bin/docker-registry /bin/busybox curl; do
    command -v "$tool" >/dev/null || die "$tool is missing: run scripts/services.sh install"
  done
  mkdir -p "$D"
  # Two scripts/dev at once (a daemon in one terminal, a command in another) must not both
  # start an engine: the second waits here for the first.
  exec 9>"$D/start.lock"
  flock 9
  ensure_engine "$D" "$ENGINE1_HOST"
  ensure_engine "$ENGINE2_DIR" "$ENGINE2_HOST"
  ensure_registry
  ensure_base_image "$ENGINE1_HOST"
  ensure_base_image "$ENGINE2_HOST"
  write_env
  exec 9>&-
}

cmd_stop() {
  [[ -d $D ]] || return 0
  rm -f "$D/env"
  stop_pidfile "$REGISTRY_PIDFILE" docker-registry
  stop_engine "$ENGINE2_DIR"
  stop_engine "$D"
}

cmd_env() {
  [[ -s $D/env ]] || die "no services env in $D: run scripts/services.sh start"
  cat "$D/env"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  env) cmd_env ;;
  *) die "usage: $0 install|start|stop|env" ;;
esac
