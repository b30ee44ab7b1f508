"""Start the demo's moving parts and keep them running: Datasette (the low-risk web app),
guacd, an X desktop behind x11vnc and an OpenSSH host, all on loopback.

Writes ``var/demo/services.json`` (ports and the targets' logins, 0600) once everything
listens; ``seed_demo --targets`` reads it to catalogue the resources and put the logins in
the vault. Stops everything on SIGTERM/SIGINT.

    .venv/bin/python scripts/demo_services.py [--web-port 8801] [--guacd-port 4822]
    .venv/bin/python scripts/demo_services.py --oidc PORTAL_PORT   (shell lines for demo.sh's OP)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from demo.targets import (  # noqa: E402
    free_port,
    start_guacd,
    start_ssh_target,
    start_vnc_target,
    wait_for_port,
)
from demo.web_app import command as datasette_command  # noqa: E402

WORK = ROOT / "var" / "demo"


def _instance_account() -> str:
    """``portal-demo-<id>``, the id made once per checkout (var/demo/instance)."""
    marker = WORK / "instance"
    if not marker.exists():
        marker.write_text(os.urandom(3).hex())
    return f"portal-demo-{marker.read_text().strip()}"


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def oidc_demo(portal_port: int) -> str:
    """``export`` lines for an OpenID Provider (the tests' oidc-provider) and the portal trusting
    it: one SSO user, sam, whose IdP says MFA was done; a fresh client secret each start."""
    import secrets
    import shlex

    op_port = 8444 if _port_free(8444) and portal_port != 8444 else free_port()
    issuer, portal = f"http://127.0.0.1:{op_port}", f"https://localhost:{portal_port}"
    secret = secrets.token_urlsafe(32)
    client = {"client_id": "portal", "client_secret": secret,
              "redirect_uris": [f"{portal}/sso/demo/callback/"],
              "backchannel_logout_uri": f"{portal}/sso/demo/backchannel-logout/",
              "backchannel_logout_session_required": True, "grant_types": ["authorization_code"],
              "response_types": ["code"], "post_logout_redirect_uris": [f"{portal}/accounts/login/"]}
    users = {"sam": {"email": "sam@corp.example", "name": "Sam Sso", "groups": ["staff"],
                     "amr": ["pwd", "mfa"]}}
    provider = {"name": "demo", "label": "Demo SSO", "issuer": issuer, "client_id": "portal",
                "client_secret": secret, "groups": {"staff": ["employee"]}}
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in {
        "OP_URL": issuer,
        "OP_CONFIG": json.dumps({"port": op_port, "issuer": issuer, "clients": [client], "users": users}),
        "PORTAL_OIDC_PROVIDERS": json.dumps([provider]),
    }.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--web-port", type=int, default=8801)
    parser.add_argument("--guacd-port", type=int, default=4822)
    parser.add_argument("--oidc", type=int, metavar="PORTAL_PORT", help="print the demo OP's settings")
    args = parser.parse_args()
    if args.oidc:
        print(oidc_demo(args.oidc))
        return
    WORK.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    web_port = args.web_port if _port_free(args.web_port) else free_port()
    guacd_port = args.guacd_port if _port_free(args.guacd_port) else free_port()
    # Host mode (the default) serves the wiki at the root of its own origin; path mode under
    # /apps/wiki/ on the portal's (docs/decisions/0019).
    base = "/" if os.environ.get("PORTAL_APPS_DOMAIN", "apps.localhost") else "/apps/wiki/"
    web = subprocess.Popen(datasette_command(WORK / "datasette", web_port, base),
                           stdout=(WORK / "datasette.log").open("ab"), stderr=subprocess.STDOUT)
    handles = []
    try:
        wait_for_port(web_port, web, "datasette", timeout=30)
        # guacd speaks TLS only, with the demo's own certificate (scripts/make_tls.py made it
        # under var/tls before this script starts); the portal verifies it (GUACD_TLS).
        tls = ROOT / "var" / "tls"
        handles.append(start_guacd(WORK / "guacd", port=guacd_port,
                                   tls=(tls / "server.pem", tls / "server-key.pem")))
        vnc = start_vnc_target(WORK / "vnc")
        handles.append(vnc)
        # An account of this demo's own: a second demo (or a test run) on the machine keeps its own
        # password, so starting one never breaks another's SSH resource.
        ssh = start_ssh_target(WORK / "ssh", username=_instance_account())
        handles.append(ssh)
        state = {
            "web": f"http://127.0.0.1:{web_port}{base}",
            "guacd_port": guacd_port,
            "vnc": vnc.upstream, "vnc_password": vnc.password,
            "ssh": ssh.upstream, "ssh_username": ssh.username, "ssh_password": ssh.password,
        }
        out = WORK / "services.json"
        out.write_text(json.dumps(state))
        out.chmod(0o600)
        print(f"demo services up: web :{web_port}, guacd :{guacd_port}, vnc {vnc.upstream}, "
              f"ssh {ssh.upstream}", flush=True)
        stop.wait()
    finally:
        for handle in reversed(handles):
            handle.stop()
        web.terminate()
        web.wait(timeout=10)
        (WORK / "services.json").unlink(missing_ok=True)
        os._exit(0)


if __name__ == "__main__":
    main()
