"""What a slot is made of (pure): the bubblewrap command line, its first script, its launches.

A slot runs as a user id of its own (no entry on the host, no group), in new user, PID, IPC,
UTS, cgroup and network namespaces, on a root that holds ``/usr`` (read-only), a few files of
``/etc`` and nothing else of the host: no portal checkout, no ``var/``, no secrets. Home and
``/tmp`` are tmpfs, so they vanish with the slot. Its only doors are two Unix sockets in
``/run/slot`` (bind-mounted from the host): ``vnc.sock``, where x11vnc serves the slot's
display to the session host's bridge (and so to guacd), and ``egress.sock``, where a browser
slot's one allowed connection leaves (to the app's origin on the portal's proxy).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["INIT_SCRIPT", "SLOT_MOUNT", "LaunchError", "SlotLayout", "bwrap_argv", "launch_script",
           "passwd_line", "prewarm_script"]

SLOT_MOUNT = "/run/slot"
HOME = "/home/slot"
EGRESS_PORT = 3128  # inside the slot's own network namespace: nobody else sees it
_ETC = ("/etc/fonts", "/etc/chromium.d", "/etc/chromium", "/etc/X11", "/etc/ssl", "/etc/alternatives",
        "/etc/localtime", "/etc/ld.so.cache", "/etc/mime.types")


class LaunchError(ValueError):
    """A launch request the slot cannot run."""


@dataclass(frozen=True)
class SlotLayout:
    """Where a slot lives on the host and who it runs as."""

    directory: Path  # host side of /run/slot (0700, owned by uid)
    uid: int
    width: int = 1280
    height: int = 800


def passwd_line(uid: int) -> str:
    """The slot's only account (its /etc/passwd), so programs that ask who they are get an answer."""
    return f"slot:x:{uid}:{uid}:isolated session:{HOME}:/bin/sh\n"


def bwrap_argv(layout: SlotLayout, *, bwrap: str = "bwrap", setpriv: str = "setpriv") -> list[str]:
    """The command that starts the slot: drop to the slot's uid, then bubblewrap."""
    uid = str(layout.uid)
    argv = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", bwrap,
            "--unshare-all", "--die-with-parent", "--new-session", "--hostname", "isolated",
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin"]
    for path in _ETC:
        argv += ["--ro-bind-try", path, path]
    argv += ["--ro-bind", str(layout.directory / "passwd"), "/etc/passwd",
             "--proc", "/proc", "--dev", "/dev",
             "--tmpfs", "/dev/shm", "--tmpfs", "/tmp",  # noqa: S108 - the slot's own, fresh tmpfs
             "--tmpfs", "/home", "--dir", HOME,
             "--bind", str(layout.directory), SLOT_MOUNT,
             "--setenv", "HOME", HOME, "--setenv", "DISPLAY", ":0", "--setenv", "USER", "slot",
             "--setenv", "PATH", "/usr/bin:/bin", "--unsetenv", "XAUTHORITY",
             "--setenv", "SLOT_GEOMETRY", f"{layout.width}x{layout.height}",
             "--chdir", HOME, "/bin/sh", f"{SLOT_MOUNT}/init.sh"]
    return argv


# The slot's first process. The X server, window manager and VNC server start at once (a warm
# slot); what the session runs starts when the session host writes launch.sh.
INIT_SCRIPT = f"""#!/bin/sh
set -u
Xvfb :0 -screen 0 "${{SLOT_GEOMETRY}}x24" -nolisten tcp -dpi 96 >/tmp/xvfb.log 2>&1 &
i=0
while [ ! -e /tmp/.X11-unix/X0 ] && [ $i -lt 400 ]; do sleep 0.025; i=$((i+1)); done
matchbox-window-manager -use_titlebar no -use_cursor yes >/dev/null 2>&1 &
x11vnc -display :0 -unixsock {SLOT_MOUNT}/vnc.sock -rfbport 0 -passwdfile {SLOT_MOUNT}/vncpasswd \\
  -forever -shared -quiet -nopw -noxdamage -nowf -nobell >/tmp/x11vnc.log 2>&1 &
[ -e {SLOT_MOUNT}/prewarm.sh ] && . {SLOT_MOUNT}/prewarm.sh
while [ ! -e {SLOT_MOUNT}/launch.sh ]; do sleep 0.02; done
. {SLOT_MOUNT}/launch.sh
wait
"""


def _browser_flags(layout: SlotLayout) -> list[str]:
    return [
        "--no-sandbox",  # bubblewrap is the sandbox; Chromium's own needs privileges the slot lacks
        "--kiosk", "--no-first-run", "--no-default-browser-check", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-translate", "--disable-features=Translate,MediaRouter,DialMediaRouteProvider",
        "--disable-dev-shm-usage", "--password-store=basic", "--noerrdialogs",
        f"--user-data-dir={HOME}/profile", f"--window-size={layout.width},{layout.height}",
        "--window-position=0,0",
        # Every connection goes to the slot's one door; nothing is resolved or reached directly.
        f"--proxy-server=http://127.0.0.1:{EGRESS_PORT}", "--proxy-bypass-list=<-loopback>",
        # The egress lets this browser reach the app's origin on the portal and nothing else, so
        # the certificate check adds nothing here; the portal's may come from a private CA.
        "--ignore-certificate-errors",
        "--disable-print-preview",  # printing from an isolated session is not offered
    ]


_EGRESS = (f"socat TCP-LISTEN:{EGRESS_PORT},bind=127.0.0.1,fork,reuseaddr "
           f"UNIX-CONNECT:{SLOT_MOUNT}/egress.sock >/tmp/egress.log 2>&1 &\n")


def prewarm_script(layout: SlotLayout) -> str:
    """A warm slot that already runs the kiosk browser (on a blank page, with no way out yet):
    an isolated web session then only has to open its address (Chromium hands it to the
    running instance), which takes a fraction of a browser start."""
    return _EGRESS + f"chromium {shlex.join(_browser_flags(layout))} about:blank >/tmp/chromium.log 2>&1 &\n"


def _browser(launch: Mapping[str, Any], layout: SlotLayout, prewarmed: bool) -> str:
    url = str(launch.get("url", ""))
    if not url.startswith("https://"):
        raise LaunchError("a browser slot opens an https:// address only")
    command = f"chromium {shlex.join(_browser_flags(layout))} {shlex.quote(url)} >>/tmp/chromium.log 2>&1 &\n"
    return command if prewarmed else _EGRESS + command


def launch_script(launch: Mapping[str, Any], layout: SlotLayout,
                  images: Mapping[str, Sequence[str]], *, prewarmed: bool = False) -> str:
    """The shell lines the slot runs for ``launch`` (sourced by the init script)."""
    kind = launch.get("kind")
    if kind == "browser":
        return _browser(launch, layout, prewarmed)
    if kind == "image":
        argv = images.get(str(launch.get("image", "")))
        if not argv:
            raise LaunchError(f"no desktop image named {launch.get('image')!r}")
        # A desktop image does not need the browser a warm slot may hold ready.
        stop = "pkill -KILL -x chromium; pkill -KILL -x socat\n" if prewarmed else ""
        return f"{stop}{shlex.join(argv)} >/tmp/app.log 2>&1 &\n"
    raise LaunchError(f"unknown launch kind {kind!r}")
