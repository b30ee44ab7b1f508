"""A small real HTTP upstream (served by uvicorn) that tells tests what it received.

Not a mock of an app: it is an HTTP server on a real socket, so what it reports is exactly
what crossed the wire from the portal. Routes:

- anything else: JSON with method, raw path, query, headers (as a list) and body length/sha256
- ``/redirect?to=URL&status=302``: a redirect, for rewrite tests
- ``/cookie``: sets cookies with Path and Domain, and one named like the portal's session cookie
- ``/bytes?n=N``: N bytes streamed in 64 KiB chunks (downloads in bounded memory)
- ``/sink``: reads the body, returns only its length and sha256 (uploads in bounded memory)
- ``/hostile``: an HTML page whose script attacks the portal (origin-isolation tests): reads
  ``/manage/people/`` same-origin and on the portal's origin with credentials, posts the lock
  form to the portal, and leaves what it got in ``window.__probe``
- ``/isolated/``: an HTML page (with ``ISOLATION-MARKER`` in it) that downloads
  ``/isolated/report.csv`` (an attachment) a moment after it loads; ``/log`` lists every request
  under ``/isolated/`` with the ``X-Portal-Assertion`` it carried (what an isolated browser did)
- ``/hits``: how many requests reached this server (anonymous requests must not), and the
  close code and reason of the last WebSocket the portal closed
- a WebSocket on any path: accepts with the first subprotocol offered, echoes text and binary
  messages; the text ``report`` answers with the handshake it saw (JSON, like the HTTP report),
  ``close <code> <reason>`` closes with that code, ``flood <n> <size>`` sends ``n`` binary
  messages of ``size`` bytes, the i-th filled with byte ``i % 256`` (order and loss checks)
"""

from __future__ import annotations

import hashlib
import json
from urllib.parse import parse_qs

HITS: dict = {"count": 0, "websockets": 0, "last_close": None}
LOG: list[dict] = []

ISOLATED_PAGE = b"""<!doctype html><title>Board</title>
<meta http-equiv="refresh" content="1;url=report.csv">
<h1 style="font-size:64px">ISOLATION-MARKER board</h1><p>Quarterly numbers, for your eyes only.</p>"""

HOSTILE_PAGE = b"""<!doctype html><title>loading</title><script>
(async () => {
  const q = new URLSearchParams(location.search), portal = q.get("portal"), victim = q.get("victim");
  const out = {};
  try { out.cookies = document.cookie; } catch (e) { out.cookies = "error: " + e; }
  const attempt = async (name, run) => {
    try { out[name] = await run(); } catch (e) { out[name] = "error: " + e; }
  };
  await attempt("same_origin_read", async () => (await fetch("/manage/people/")).text());
  await attempt("cross_read", async () =>
    (await fetch(portal + "/manage/people/", {credentials: "include"})).text());
  await attempt("cross_post", async () => {
    await fetch(portal + "/manage/people/" + victim + "/lock/", {
      method: "POST", mode: "no-cors", credentials: "include",
      headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: "reason=pwned"});
    return "sent";
  });
  window.__probe = out;
  document.title = "done";
})();
</script>"""


async def _read(receive) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        digest.update(chunk)
        if not message.get("more_body"):
            return size, digest.hexdigest()


async def _reply(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None,
                 content_type: bytes = b"application/json") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await _websocket(scope, receive, send)
        return
    path = scope["path"]
    query = parse_qs(scope["query_string"].decode())
    if path.endswith("/hits"):
        await _reply(send, 200, json.dumps(HITS).encode())
        return
    HITS["count"] += 1
    if path.endswith("/log"):
        await _reply(send, 200, json.dumps(LOG).encode())
        return
    if "/isolated/" in path:
        await _read(receive)
        headers = dict(scope["headers"])
        LOG.append({"path": path, "assertion": headers.get(b"x-portal-assertion", b"").decode()})
        if path.endswith("report.csv"):
            await _reply(send, 200, b"quarter,amount\nq1,5\n", [
                (b"content-disposition", b'attachment; filename="report.csv"')], content_type=b"text/csv")
        else:
            await _reply(send, 200, ISOLATED_PAGE, content_type=b"text/html; charset=utf-8")
        return
    if path.endswith("/hostile"):
        await _read(receive)
        await _reply(send, 200, HOSTILE_PAGE, content_type=b"text/html; charset=utf-8")
        return
    if path.endswith("/redirect"):
        await _read(receive)
        status = int(query.get("status", ["302"])[0])
        await _reply(send, status, b"", [(b"location", query["to"][0].encode())])
        return
    if path.endswith("/cookie"):
        await _read(receive)
        await _reply(send, 200, b"{}", [
            (b"set-cookie", b"app_pref=dark; Path=/settings; Domain=upstream.internal; HttpOnly"),
            (b"set-cookie", b"app_session=s3cr3t; Path=/; Secure; SameSite=Lax"),
            (b"set-cookie", b"sessionid=stolen; Path=/"),
            (b"set-cookie", b"__Host-x=1; Path=/; Secure"),
            (b"clear-site-data", b'"cookies"'),
        ])
        return
    if path.endswith("/bytes"):
        await _read(receive)
        total = int(query.get("n", ["0"])[0])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream"),
                                (b"content-length", str(total).encode())]})
        block = b"z" * 65536
        sent = 0
        while sent < total:
            piece = block[: min(len(block), total - sent)]
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            sent += len(piece)
        await send({"type": "http.response.body", "body": b""})
        return
    size, digest = await _read(receive)
    if path.endswith("/sink"):
        await _reply(send, 200, json.dumps({"length": size, "sha256": digest}).encode())
        return
    report = {
        "method": scope["method"],
        "raw_path": scope.get("raw_path", b"").decode("latin-1"),
        "path": path,
        "query": scope["query_string"].decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "body_length": size,
        "body_sha256": digest,
    }
    await _reply(send, 200, json.dumps(report).encode())


async def _websocket(scope, receive, send):
    if (await receive())["type"] != "websocket.connect":
        return
    HITS["count"] += 1
    HITS["websockets"] += 1
    offered = scope.get("subprotocols") or []
    await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
    report = {
        "raw_path": scope.get("raw_path", b"").decode("latin-1"),
        "path": scope["path"],
        "query": scope["query_string"].decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "subprotocols": offered,
    }
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            HITS["last_close"] = [message.get("code"), message.get("reason") or ""]
            return
        text = message.get("text")
        if text == "report":
            await send({"type": "websocket.send", "text": json.dumps(report)})
        elif text is not None and text.startswith("close "):
            _, code, *reason = text.split(" ", 2)
            await send({"type": "websocket.close", "code": int(code), "reason": " ".join(reason)})
            return
        elif text is not None and text.startswith("flood "):
            _, count, size = text.split()
            try:
                for i in range(int(count)):
                    await send({"type": "websocket.send", "bytes": bytes([i % 256]) * int(size)})
            except OSError:  # the portal closed this socket mid-flood (uvicorn's ClientDisconnected)
                message = await receive()
                HITS["last_close"] = [message.get("code"), message.get("reason") or ""]
                return
        elif text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
