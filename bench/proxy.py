"""Direct vs nginx vs portal: the identity-aware proxy's cost, in one run, same concurrency.

    .venv/bin/python bench/proxy.py [--upstream echo|datasette] [--connections 16] [--seconds 10]
                                    [--workers 1] [--rounds 3] [--mode host|path]

Starts the upstream, nginx (config generated in a temp dir) and the portal (uvicorn,
--workers processes, behind-a-TLS-balancer mode: plain HTTP from 127.0.0.1 trusted for
X-Forwarded-Proto), signs a bench user in (a real session with a verified TOTP device), then
points wrk at each with the same connections and duration: a throughput run at
--connections and a latency run at one connection, in --rounds interleaved rounds whose
medians are printed. Every portal request is authorized (session, user, device, resource,
decision: the first one fully, later ones from the admission cache, see
docs/decisions/0011) and carries a freshly signed assertion. Uses DATABASE_URL / REDIS_URL
like the portal does; without DATABASE_URL it makes its own SQLite file in a temp directory,
so the demo's database is never touched.

``--mode host`` (the default, as the portal runs by default) serves the app on its own origin
``bench.apps.localhost``: the bench takes the app session through the real hand-off (app origin,
``/handoff/bench/`` on the portal, ``/.portal/callback``) and wrk sends that Host and cookie.
``--mode path`` runs the portal with ``PORTAL_APPS_DOMAIN=`` and requests ``/apps/bench/``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


def _wrk(url: str, connections: int, seconds: int, headers: dict[str, str]) -> dict[str, float]:
    args = ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def pct(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {"rps": rps, "p50": pct("50"), "p99": pct("99"), "errors": int(non2xx.group(1)) if non2xx else 0}


def _wait(url: str, headers: dict[str, str] | None = None) -> None:
    import httpx

    for _ in range(200):
        try:
            httpx.get(url, headers=headers, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise SystemExit(f"{url} never answered")


def _nginx_conf(directory: Path, port: int, upstream_port: int) -> Path:
    conf = directory / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {directory}/body; proxy_temp_path {directory}/proxy;
  fastcgi_temp_path {directory}/fcgi; uwsgi_temp_path {directory}/uwsgi; scgi_temp_path {directory}/scgi;
  upstream app {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $remote_addr;
    }}
  }}
}}
""")
    return conf


def _bench_session(slug: str, upstream: str) -> str:
    import django

    django.setup()
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.auth.models import Group
    from django.contrib.sessions.backends.db import SessionStore
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from portal.accounts.mfa import MFA_TIME_KEY
    from tiers.models import Resource, Tier

    user, _ = get_user_model().objects.get_or_create(username="bench",
                                                     defaults={"email": "bench@example.com"})
    group, _ = Group.objects.get_or_create(name="employee")
    user.groups.add(group)
    device, _ = TOTPDevice.objects.get_or_create(user=user, name="bench", defaults={"confirmed": True})
    tier, _ = Tier.objects.update_or_create(name="bench-low", defaults={"access_mode": "proxy"})
    resource, _ = Resource.objects.update_or_create(
        slug=slug, defaults={"name": "Bench app", "kind": "web", "upstream": upstream, "tier": tier})
    resource.allowed_groups.set([group])
    session = SessionStore()
    session.update({SESSION_KEY: str(user.pk),
                    BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
                    HASH_SESSION_KEY: user.get_session_auth_hash(),
                    DEVICE_ID_SESSION_KEY: device.persistent_id, MFA_TIME_KEY: int(time.time())})
    session.create()
    return session.session_key


def _cookie_from(response, name: str) -> str:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return header.split(";", 1)[0].split("=", 1)[1]
    raise SystemExit(f"no {name} cookie in {response.status_code} {response.headers}")


def _app_session(port: int, session_key: str, slug: str) -> dict[str, str]:
    """The headers of a browser holding ``slug``'s app session, taken through the real hand-off."""
    from urllib.parse import urlsplit

    import httpx

    base, app_host = f"http://127.0.0.1:{port}", f"{slug}.apps.localhost:{port}"
    https = {"X-Forwarded-Proto": "https"}
    first = httpx.get(base + "/", headers={**https, "Host": app_host})
    state = _cookie_from(first, "__Host-portal-state")
    to_portal = urlsplit(first.headers["location"])
    code = httpx.get(f"{base}{to_portal.path}?{to_portal.query}",
                     headers={**https, "Host": to_portal.netloc, "Cookie": f"sessionid={session_key}"})
    callback = urlsplit(code.headers["location"])
    landed = httpx.get(f"{base}{callback.path}?{callback.query}",
                       headers={**https, "Host": app_host, "Cookie": f"__Host-portal-state={state}"})
    token = _cookie_from(landed, "__Host-portal-app")
    return {**https, "Host": app_host, "Cookie": f"__Host-portal-app={token}"}


def _profile(slug: str, session_key: str, rounds: int = 300) -> dict[str, float]:
    """Where a request's time goes, measured in this process, per call (ms)."""
    from streaming.proxy.access import GateRequest, admit, keyring
    from streaming.proxy.assertion import Identity, assertion_claims, sign_assertion

    req = GateRequest(slug=slug, method="GET", path="/", portal_path=f"/apps/{slug}/",
                      session_key=session_key, client_address="127.0.0.1", request_id="bench",
                      issuer="https://bench")
    admit(req)
    started = time.perf_counter()
    for _ in range(rounds):
        admit(req)
    gate = (time.perf_counter() - started) / rounds * 1000
    key = keyring().active()
    ident = Identity("1", "bench", "b@example.com", ("employee",), "low", ("pwd", "otp"), 0, 0)
    started = time.perf_counter()
    for _ in range(rounds):
        sign_assertion(key, assertion_claims(ident, issuer="i", audience="a", now=time.time(), lifetime=60))
    sign = (time.perf_counter() - started) / rounds * 1000
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        admit(req)
    return {"admit_ms (incl. signing)": gate, "sign_ms": sign, "queries_per_request": len(queries)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", choices=["echo", "datasette"], default="datasette")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds over the three targets; figures are medians")
    parser.add_argument("--mode", choices=["host", "path"], default="host",
                        help="the app on its own origin (host, the default) or under /apps/ (path)")
    parser.add_argument("--workers", type=int, default=1,
                        help="portal (uvicorn) worker processes; more than one needs REDIS_URL")
    args = parser.parse_args()
    if args.workers > 1 and not os.environ.get("REDIS_URL"):
        raise SystemExit("--workers > 1 needs REDIS_URL: worker processes share sessions and hear "
                         "each other's invalidations through Redis")
    for program in ("wrk", "nginx"):
        if not (shutil.which(program) or Path(f"/usr/sbin/{program}").exists()):
            raise SystemExit(f"{program} is not installed")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"

    from portal.server import HTTP_PROTOCOL
    from tests.upstreams.launch import free_port

    py = sys.executable
    if not os.environ.get("DATABASE_URL"):
        scratch = Path(tempfile.mkdtemp(prefix="bench-db-"))
        os.environ["DATABASE_URL"] = f"sqlite:///{scratch / 'bench.sqlite3'}"
    subprocess.run([py, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, check=True)
    procs: list[subprocess.Popen] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    try:
        up_port, nginx_port, portal_port = free_port(), free_port(), free_port()
        if args.upstream == "datasette":
            from demo.web_app import command

            base = "/" if args.mode == "host" else "/apps/bench/"
            procs.append(subprocess.Popen(command(tmp / "ds", up_port, base), cwd=ROOT,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            path = "notes/notes?_size=10"
        else:
            base = "/"
            procs.append(subprocess.Popen([py, "-m", "uvicorn", "tests.upstreams.echo:app", "--port",
                                           str(up_port), "--log-level", "warning", "--no-access-log"],
                                          cwd=ROOT))
            path = "hello"
        upstream = f"http://127.0.0.1:{up_port}{base}"
        _wait(upstream)
        session_key = _bench_session("bench", upstream)
        procs.append(subprocess.Popen([nginx, "-c", str(_nginx_conf(tmp, nginx_port, up_port)), "-g",
                                       "daemon off;"]))
        env = {**os.environ, "PORTAL_TRUSTED_PROXIES": "127.0.0.1/32",
               "PORTAL_APPS_DOMAIN": "apps.localhost" if args.mode == "host" else ""}
        procs.append(subprocess.Popen(
            [py, "-m", "uvicorn", "portal.asgi:application", "--http", HTTP_PROTOCOL,
             "--port", str(portal_port), "--log-level",
             "warning", "--no-access-log", "--no-proxy-headers", "--no-server-header",
             "--workers", str(args.workers)],
            cwd=ROOT, env=env))
        portal_headers = {"Cookie": f"sessionid={session_key}", "X-Forwarded-Proto": "https"}
        _wait(f"http://127.0.0.1:{nginx_port}{base}")
        _wait(f"http://127.0.0.1:{portal_port}/healthz", portal_headers)
        if args.mode == "host":
            portal_headers = _app_session(portal_port, session_key, "bench")
            portal_url = f"http://127.0.0.1:{portal_port}/{path}"
        else:
            portal_url = f"http://127.0.0.1:{portal_port}/apps/bench/{path}"
        targets = {
            "direct": (f"{upstream}{path}", {}),
            "nginx": (f"http://127.0.0.1:{nginx_port}{base}{path}", {}),
            "portal": (portal_url, portal_headers),
        }
        import httpx

        check = httpx.get(targets["portal"][0], headers=portal_headers)
        assert check.status_code == 200, (check.status_code, check.text[:300])
        for url, headers in targets.values():
            _wrk(url, args.connections, 2, headers)  # warm-up
        # Rounds interleave the targets, and each figure is the median over the rounds, so a
        # burst of other work on the machine cannot favour one target over another.
        rounds: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, (url, headers) in targets.items():
                rounds[name].append({"load": _wrk(url, args.connections, args.seconds, headers),
                                     "single": _wrk(url, 1, args.seconds, headers)})
        results = {name: {kind: {figure: statistics.median(r[kind][figure] for r in runs)
                                 for figure in runs[0][kind]} for kind in ("load", "single")}
                   for name, runs in rounds.items()}
        profile = _profile("bench", session_key)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"upstream={args.upstream} connections={args.connections} seconds={args.seconds} "
          f"rounds={args.rounds} (medians) mode={args.mode} "
          f"portal workers={args.workers} cores={os.cpu_count()} "
          f"db={os.environ['DATABASE_URL'].split(':', 1)[0]} "
          f"redis={'yes' if os.environ.get('REDIS_URL') else 'no'}")
    print(f"{'target':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} | "
          f"{'1-conn req/s':>12} {'p50 ms':>8} {'p99 ms':>8}")
    for name, r in results.items():
        load, single = r["load"], r["single"]
        print(f"{name:8} {load['rps']:9.0f} {load['p50']:8.2f} {load['p99']:8.2f} {load['errors']:8.0f} | "
              f"{single['rps']:12.0f} {single['p50']:8.2f} {single['p99']:8.2f}")
    portal, nginx_r, direct = results["portal"], results["nginx"], results["direct"]
    print(f"portal/nginx throughput: {portal['load']['rps'] / nginx_r['load']['rps']:.2f}x (target >= 0.2)")
    print(f"portal/direct throughput: {portal['load']['rps'] / direct['load']['rps']:.2f}x")
    print(f"added p50 latency, 1 connection: {portal['single']['p50'] - direct['single']['p50']:.2f} ms "
          f"(target < 2); under load: {portal['load']['p50'] - direct['load']['p50']:.2f} ms")
    print("profile (in-process, per request): " + ", ".join(f"{k}={v:.3f}" for k, v in profile.items()))


if __name__ == "__main__":
    main()
