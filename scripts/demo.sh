#!/usr/bin/env bash
# Fresh machine -> running portal: migrate, seed, TLS, start the ASGI server (plus Celery
# worker and beat when REDIS_URL is set) and print the URL and demo credentials.
# PORT=9443 make demo serves on another port. Ctrl-C stops everything and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PORT=${PORT:-8443}
# Everything the demo writes under var/ (database, secrets, keys, logs, recordings) is this
# user's alone: 0600 files in 0700 directories, from the first start.
umask 077
mkdir -p var/log

$PY manage.py migrate --no-input -v0
$PY manage.py collectstatic --no-input -v0
ca=$($PY scripts/make_tls.py var/tls)

pids=()
stopped=0
cleanup() {
  [ "$stopped" = 1 ] && return 0
  stopped=1
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
# Ctrl-C (INT) or a TERM is how a demo is meant to end: stop the children, say so, exit 0
# (not 130/143, which make reports as an error).
stop() { trap '' INT TERM; echo; echo "  Stopping the demo..."; cleanup; echo "  Demo stopped."; exit 0; }
trap stop INT TERM
trap cleanup EXIT

# The low-risk app (Datasette), guacd, an X desktop (x11vnc) and an SSH host, on loopback.
rm -f var/demo/services.json
$PY scripts/demo_services.py > var/log/demo-services.log 2>&1 & pids+=($!)
for _ in $(seq 1 150); do [ -s var/demo/services.json ] && break; sleep 0.2; done
if [ ! -s var/demo/services.json ]; then
  echo "demo services did not start; see var/log/demo-services.log" >&2; tail -20 var/log/demo-services.log >&2
  exit 1
fi
GUACD_PORT=$($PY -c 'import json; print(json.load(open("var/demo/services.json"))["guacd_port"])')
# guacd only speaks TLS (its certificate comes from the demo CA): principle 3 on this hop too.
export GUACD_PORT GUACD_HOST=127.0.0.1 GUACD_TLS=1 GUACD_CA_FILE=var/tls/ca.pem
$PY manage.py verify_audit >/dev/null || echo "WARNING: the audit chain does not verify (manage.py verify_audit)" >&2
creds=$($PY manage.py seed_demo --json --targets var/demo/services.json --base-url "https://localhost:$PORT")

# Isolated sessions: a session host keeps disposable slots (bubblewrap sandboxes, each with its
# own X and VNC server); the Ops desktop runs a fresh terminal per session in one, and a web
# app re-tagged to a stream tier opens as an isolated browser there.
iso_note="  (No session host: it needs root and bubblewrap; the Ops desktop stays the shared demo desktop.)"
if [ "$(id -u)" = 0 ] && command -v bwrap >/dev/null; then
  $PY manage.py session_host --name demo --slots "${DEMO_SLOTS:-3}" >var/log/session-host.log 2>&1 & pids+=($!)
  $PY manage.py isolated_desktop ops-desktop terminal >/dev/null
  iso_note="  Isolated sessions: a session host keeps ${DEMO_SLOTS:-3} disposable desktops (log: var/log/session-host.log);
  Ops desktop opens a fresh terminal per session. Re-tag the wiki to high to open it as an isolated browser."
fi

# Enterprise sign-in: an OpenID Provider (oidc-provider on Node, as in the tests) with one user.
sso_note="  (No OpenID Provider: Node or node_modules/oidc-provider is missing; run make setup.)"
if [ -z "${PORTAL_OIDC_PROVIDERS:-}" ] && command -v node >/dev/null && [ -d node_modules/oidc-provider ]; then
  eval "$($PY scripts/demo_services.py --oidc "$PORT")"
  NODE_EXTRA_CA_CERTS=var/tls/ca.pem node tests/fixtures/oidc/op.mjs >var/log/oidc-provider.log 2>&1 & pids+=($!)
  sso_note="  SSO user: 'Sign in with Demo SSO' on the sign-in page, then at the IdP ($OP_URL) sign in
  as sam (the demo IdP takes any password, and says MFA was done). Sign out at the IdP:
  $OP_URL/session/end ends sam's portal session too (back-channel logout)."
fi

if [ -n "${REDIS_URL:-}" ]; then
  .venv/bin/celery -A portal worker --loglevel INFO >var/log/celery-worker.log 2>&1 & pids+=($!)
  .venv/bin/celery -A portal beat --loglevel INFO -s var/celerybeat-schedule >var/log/celery-beat.log 2>&1 & pids+=($!)
  echo "Celery worker and beat started (logs in var/log/)"
fi

# --no-proxy-headers: only the portal's own middleware decides whom to believe about
# X-Forwarded-For (PORTAL_TRUSTED_PROXIES), never the server's defaults. Its log goes to the
# terminal and to var/log/portal.log (tee -i: Ctrl-C must not cut the log before the server ends).
.venv/bin/uvicorn portal.asgi:application --http portal.server:PortalHttpProtocol \
  --host 127.0.0.1 --port "$PORT" --ssl-keyfile var/tls/server-key.pem --ssl-certfile var/tls/server.pem \
  --no-proxy-headers --no-server-header --log-level warning > >(tee -i -a var/log/portal.log) 2>&1 & pids+=($!)

for _ in $(seq 1 50); do
  curl -skf "https://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.2
done

cat <<MSG

  ZT Portal is running at  https://localhost:$PORT/   (another port: PORT=9443 make demo)
  (HTTPS with a local CA; trust $ca in your browser to drop the warning)
  Portal log: var/log/portal.log (and this terminal); other services' logs: var/log/

  Demo users: password, then a code from an authenticator app holding the TOTP secret
  (no app at hand? .venv/bin/python manage.py demo_totp alice prints the current code):
MSG
echo "$creds" | $PY scripts/print_demo.py
echo
echo "$sso_note"
echo "$iso_note"
echo
echo "  All of it again as JSON: .venv/bin/python manage.py seed_demo --json    (Ctrl-C stops)"
# `wait -n` returns when a trapped signal arrives (stop() then exits 0) or when a child has
# ended (the server or the demo services died: exit non-zero so make says so).
wait -n "${pids[@]}" || true
echo "  A demo process stopped by itself; see var/log/ (portal.log, demo-services.log)" >&2
exit 1
