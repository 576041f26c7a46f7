#!/usr/bin/env bash
# The vpnlab namespace lab in one command (DESIGN §3): r1 (VPN client) -- isp -- r2 (VPN server),
# and web (who-am-I) behind the isp. Sealed: no link to this machine's network.
#
#   sudo scripts/netns-lab.sh [up [--cipher C] [--no-vpn] [--clients N] [--nat off] ...]
#                                                        build, start the VPN, verify, summary
#   sudo scripts/netns-lab.sh up --fault NAME|random [--seed N]
#                                                        a troubleshooting lab: one hidden fault
#                                                        (vpnlab check: is it repaired?)
#   sudo scripts/netns-lab.sh down                       remove everything
#   sudo scripts/netns-lab.sh status [--json]            nodes, routes, daemons
#   sudo scripts/netns-lab.sh exec NODE CMD...           run CMD inside NODE
#   sudo scripts/netns-lab.sh verify [--json]            ping + who-am-I from each client
#   sudo scripts/netns-lab.sh stop-vpn                   stop the VPN daemons only
#   sudo scripts/netns-lab.sh start-vpn [--cipher C] [--static-keys] [--nat on|off]
#                                                        (re)start the VPN daemons
#   sudo scripts/netns-lab.sh impair [--loss PCT] [--delay MS] [--jitter MS]
#                                                        on the isp (0 or left out: none)
#   sudo scripts/netns-lab.sh route-back [--remove]      without NAT: the isp's way back
#   sudo scripts/netns-lab.sh notebook [--port N]        the course (JupyterLab)
#
# Without sudo (an ordinary user, where the host allows unprivileged user namespaces) the same
# commands build the lab in namespaces the user owns (vpnlab/lab/rootless.py); the Debian
# packages must be there already (the script says the one apt-get command that needs root).
# Any other verb of `vpnlab lab` works too: the script passes VERB ARGS... on to
# `.venv/bin/vpnlab lab VERB ARGS...`; `vpnlab lab --help` lists them, `VERB --help` its options.
# VPNLAB_PREFIX (default vpnlab-) names the namespaces: vpnlab-r1, vpnlab-isp, ...
# Re-running `up` is safe: it removes the previous lab first.
# Progress lines ([vpnlab] ...) go to stderr: stdout is only the output of the command.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

usage() {  # the comment block above, without its "# "
  awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
  exit 0
}

unknown_command() {  # one line and a hint, on stderr; exit 2 as for any usage error
  printf "[vpnlab] error: unknown command '%s'\n" "$1" >&2
  printf 'the commands: %s --help (the lab verbs: vpnlab lab --help)\n' "$0" >&2
  exit 2
}

lab_verb() {  # is $1 a verb of `vpnlab lab`? (asks vpnlab's own parser: hidden verbs count too)
  "$VENV/bin/vpnlab" lab "$1" --help >/dev/null 2>&1
}

summary() {
  local prefix=${VPNLAB_PREFIX:-vpnlab-} me="scripts/netns-lab.sh" sudo="sudo " dump=tcpdump
  local state="${VPNLAB_STATE_DIR:-/run/vpnlab}/$prefix"
  if [ "$(id -u)" -ne 0 ]; then  # rootless (vpnlab/lab/rootless.py): tcpdump cannot drop to its user
    sudo="" dump=tshark state="${VPNLAB_STATE_DIR:-${VPNLAB_HOME:-$HOME/.vpnlab}/labs}/$prefix"
  fi
  [ "$prefix" = vpnlab- ] || me="VPNLAB_PREFIX=$prefix $me"
  cat <<EOF

The lab is up (namespaces ${prefix}r1, ${prefix}isp, ${prefix}r2, ${prefix}web)
  r1   192.0.2.2      VPN client (tun0), all its traffic goes through the tunnel
  isp  192.0.2.1 | 198.51.100.1 | 203.0.113.1   the lab's "internet" (a router)
  r2   198.51.100.2   VPN server (tun0 10.8.0.1), NAT out of eth0
  web  203.0.113.10   who-am-I on port 80: it answers with the address it sees

Look inside:
EOF
  local width=$((${#sudo} + ${#me} + 40))  # "sudo $me" and its longest command, one space
  printf "  %-${width}s %s\n" \
    "$sudo$me exec r1 ip route" "r1's routes (via tun0)" \
    "$sudo$me exec r1 curl -s http://203.0.113.10/" "who am I? (r2's address with the VPN)" \
    "$sudo$me exec r2 $dump -ni eth0 udp port 4500" "the tunnel on the wire" \
    "$sudo$me exec r1 $dump -ni tun0" "the packets inside it" \
    "$sudo$me status" "nodes, routes, daemons, counters"
  cat <<EOF
  logs and status files: $state/logs/, $state/*.json

The VPN daemons only: $sudo$me stop-vpn (then start-vpn)
Stop: $sudo$me down
EOF
}

main() {
  local cmd=${1:-up} checked=
  [ $# -gt 0 ] && shift
  case "$cmd" in
    -h | --help | help) usage ;;
    -*) unknown_command "$cmd" ;;
    up | exec | notebook) ;;
    *) # a verb of `vpnlab lab`: refuse a typo before setup, if vpnlab is installed already
      if [ -x "$VENV/bin/vpnlab" ]; then
        lab_verb "$cmd" || unknown_command "$cmd"
        checked=1
      fi
      ;;
  esac
  # the lab and its proof need the VPN alone; the course (JupyterLab, figures, captures) is added
  # on the first `notebook`
  if [ "$cmd" = notebook ]; then setup course; else setup; fi
  local vpnlab="$VENV/bin/vpnlab"
  [ -x "$vpnlab" ] || die "$vpnlab is missing: setup did not install vpnlab"
  case "$cmd" in
    up)
      if [[ " $* " == *" --fault"* ]]; then  # broken on purpose: the student's task
        say "Lab: replacing any previous lab; building namespaces, links, routes; starting who-am-I and the VPN"
        "$vpnlab" lab up "$@" >/dev/null
        say "Lab: a fault is hidden in it; find and repair it ($vpnlab check says when it works)"
      else  # one turn: another command (a second terminal, a notebook) waits until it is proven
        say "Lab: replacing any previous lab; building namespaces, links, routes; starting who-am-I and the VPN; verifying"
        "$vpnlab" lab up --verify "$@"
      fi
      summary
      ;;
    notebook)
      # The course: JupyterLab on the loopback only, with a token, as root or in a rootless
      # holder (the notebooks build labs: namespaces). Each notebook builds its own lab
      # (VPNLAB_PREFIX, default nb-) and removes it at its end.
      local port=8888
      if [ "${1:-}" = "--port" ]; then
        port=${2:-}
        [[ "$port" =~ ^[0-9]{1,5}$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] \
          || die "usage: $0 notebook [--port N] (N: a port, 1 to 65535)"
        shift 2
      fi
      say "Course: JupyterLab on http://127.0.0.1:$port/ (open the URL with the token below)"
      say "On a VM: ssh -L $port:127.0.0.1:$port USER@VM, then open that URL on your machine"
      cd "$VPNLAB_ROOT/notebooks"
      local holder=()  # without root: JupyterLab and every lab it builds in a holder of their own
      [ "$(id -u)" -eq 0 ] || holder=("$vpnlab" rootless run --)
      exec "${holder[@]}" "$VENV/bin/jupyter" lab --allow-root --no-browser --ip 127.0.0.1 --port "$port" \
        --ServerApp.root_dir="$VPNLAB_ROOT/notebooks" \
        --LabApp.default_url=/lab/tree/00_setup_topology.ipynb "$@"
      ;;
    exec)
      [ $# -ge 2 ] || die "usage: $0 exec NODE CMD [ARGS...]"
      local node=$1; shift
      exec "$vpnlab" lab exec "$node" -- "$@"
      ;;
    *) # down, status, verify, start-vpn, stop-vpn, impair, route-back, ...: as vpnlab has them
      [ -n "$checked" ] || lab_verb "$cmd" || unknown_command "$cmd"
      exec "$vpnlab" lab "$cmd" "$@"
      ;;
  esac
}

main "$@"
