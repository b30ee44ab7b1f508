#!/usr/bin/env bash
# Installs the Debian packages the portal's demo and tests need, when they are missing.
# guacd is not in Debian 12: it comes from Debian 11 (bullseye) through an apt source pinned
# low (priority 100), so nothing else on the machine is ever taken from bullseye.
set -euo pipefail

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v Xvfb >/dev/null 2>&1 || need+=(xvfb)
command -v x11vnc >/dev/null 2>&1 || need+=(x11vnc)
command -v xterm >/dev/null 2>&1 || need+=(xterm)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
# Isolated sessions: slots are bubblewrap sandboxes with a minimal window manager; socat is the
# isolated browser's one door out; the slot tests probe from inside with python3.
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
command -v matchbox-window-manager >/dev/null 2>&1 || need+=(matchbox-window-manager)
command -v socat >/dev/null 2>&1 || need+=(socat)
[ -x /usr/bin/python3 ] || need+=(python3)
command -v guacd >/dev/null 2>&1 || [ -x /usr/sbin/guacd ] || need_guacd=1
# The RDP target (FreeRDP's shadow server sharing an Xvfb desktop) must use the same FreeRDP
# as guacd's RDP plugin, so it comes from bullseye too.
command -v freerdp-shadow-cli >/dev/null 2>&1 || need_guacd=1

if [ ${#need[@]} -eq 0 ] && [ -z "${need_guacd:-}" ]; then
  echo "system packages: all present"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "system packages missing: ${need[*]} ${need_guacd:+guacd}" >&2
  echo "run 'sudo scripts/install-system.sh' once, then try again" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if [ -n "${need_guacd:-}" ]; then
  if ! grep -rqs bullseye /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian bullseye main" > /etc/apt/sources.list.d/bullseye.list
  fi
  cat > /etc/apt/preferences.d/bullseye-low <<'PIN'
Package: *
Pin: release n=bullseye
Pin-Priority: 100
PIN
fi
apt-get update -qq
if [ ${#need[@]} -gt 0 ]; then
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if [ -n "${need_guacd:-}" ]; then
  apt-get install -y -qq --no-install-recommends -t bullseye \
    guacd libguac-client-vnc0 libguac-client-ssh0 libguac-client-rdp0 freerdp2-shadow-x11
fi
# Debian starts services on install; the portal's fixtures start their own on free ports.
systemctl disable --now ssh guacd nginx >/dev/null 2>&1 || true
pkill -x guacd >/dev/null 2>&1 || true
echo "system packages: installed"
