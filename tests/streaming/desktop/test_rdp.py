"""RDP through the whole stack: real guacd 1.3 and FreeRDP's shadow server sharing an X desktop.

The vault holds the demo unix account's login for the resource, and the shadow server asks
PAM about every RDP login: a session that draws the desktop proves the portal injected the
vault's credentials and the target accepted them; one with a wrong vault password proves
they are checked, and that the browser never sees the desktop then. What the browser
receives never holds the password, and a recording tier leaves a recording of the session.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from pathlib import Path

import pytest
from channels.db import database_sync_to_async

from streaming.desktop.models import StreamSession
from streaming.desktop.vault import TargetSecret
from tests.conftest import sign_in
from tests.streaming.desktop.conftest import (
    Browser,
    communicator,
    make_resource,
    open_live,
    open_page,
    wait_for_digest,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VISIBLE_LAYER = "0"  # the default layer; guacd draws the mouse pointer on buffer -1


@pytest.fixture
def signed_in(client, employee):
    sign_in(client, employee)
    return client


async def _connect(page) -> Browser:
    comm = communicator(page)
    connected, subprotocol = await comm.connect(timeout=10)
    assert connected and subprotocol == "guacamole"
    return Browser(comm)


def _drawn(instructions: list[tuple[str, tuple[str, ...]]]) -> list[tuple[int, int, int, int]]:
    """(x, y, width, height) of every complete PNG guacd drew on the visible layer so far."""
    open_streams: dict[str, tuple[int, int, list[bytes]]] = {}
    drawn = []
    for op, args in instructions:
        if op == "img" and args[2] == VISIBLE_LAYER and args[3] == "image/png":
            open_streams[args[0]] = (int(args[4]), int(args[5]), [])
        elif op == "blob" and args[0] in open_streams:
            open_streams[args[0]][2].append(base64.b64decode(args[1]))  # each blob is its own base64
        elif op == "end" and args[0] in open_streams:
            x, y, parts = open_streams.pop(args[0])
            png = b"".join(parts)
            assert png.startswith(PNG_SIGNATURE) and png[12:16] == b"IHDR", png[:24]
            width, height = struct.unpack(">II", png[16:24])
            drawn.append((x, y, width, height))
    return drawn


def _area(drawn: list[tuple[int, int, int, int]]) -> int:
    return sum(width * height for _x, _y, width, height in drawn)


async def _logged_since(log: Path, offset: int, text: bytes, timeout: float = 2) -> bool:
    """Whether the target's log says ``text`` after ``offset`` (waiting a moment for its writes)."""
    deadline = time.monotonic() + timeout
    while text not in log.read_bytes()[offset:]:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


PAM_REFUSED = b"pam_authenticate failure"


async def test_an_rdp_session_logs_in_with_the_vaults_login_and_draws_the_desktop(signed_in, rdp_resource,
                                                                                  rdp_target):
    log_offset = rdp_target.log_path.stat().st_size
    page = await database_sync_to_async(open_page)(signed_in, rdp_resource.slug)
    browser = await _connect(page)

    assert await browser.receive() == f"0.,36.{page.session_id};"
    # The shared 1024x768 desktop arrives as PNG tiles on the visible layer, the xterm's
    # window (100x30 cells at +10+10) among them.
    await browser.until(lambda op, _args: op == "sync" and any(
        width >= 300 and height >= 200 for _x, _y, width, height in _drawn(browser.instructions)))
    assert _area(_drawn(browser.instructions)) >= 1024 * 768 // 4
    assert PAM_REFUSED not in rdp_target.log_path.read_bytes()[log_offset:]  # PAM took the vault's login

    stream = await database_sync_to_async(StreamSession.objects.get)(pk=page.session_id)
    assert stream.state == "live" and stream.guacd_connection_id.startswith("$")
    assert all(op not in ("args", "ready", "select", "connect") for op, _ in browser.instructions)
    assert rdp_target.password not in "".join(browser.received) + page.html

    await browser.send("10.disconnect;")
    await browser.until_closed()


async def test_a_wrong_vault_password_is_refused_by_the_target_and_the_desktop_never_shows(
        signed_in, stream_tier, rdp_target, desktop_settings):
    resource = await database_sync_to_async(make_resource)(
        "ops-rdp", "rdp", rdp_target.upstream, stream_tier,
        TargetSecret(username=rdp_target.username, password=f"not-{rdp_target.password}"))
    log_offset = rdp_target.log_path.stat().st_size
    page = await database_sync_to_async(open_page)(signed_in, resource.slug)
    browser = await _connect(page)

    # PAM refuses after its failure delay (3 s) and the shadow server drops the connection,
    # which guacd 1.3 reports as "Aborted. See logs." with UPSTREAM_UNAVAILABLE (0x0208). The
    # portal ends the session at once and says what that means, instead of guacd's log hint.
    _op, args = await browser.until(lambda op, _args: op == "error", timeout=15)
    assert "sign-in" in args[0] and "credentials" in args[0], args
    assert "See logs" not in "".join(browser.received)
    assert _drawn(browser.instructions) == []
    assert await _logged_since(rdp_target.log_path, log_offset, PAM_REFUSED)
    assert rdp_target.password not in "".join(browser.received) + page.html

    await browser.until_closed()  # the portal closes the tunnel itself
    stream = await database_sync_to_async(StreamSession.objects.get)(pk=page.session_id)
    # guacd cannot tell a refusal from an unreachable target here: the reason says both.
    assert (stream.state, stream.end_reason, stream.ended_by) == ("ended", "target_unavailable", "target")
    assert stream.end_message == args[0]


async def test_a_recording_tier_records_the_rdp_session(signed_in, rdp_resource, rdp_target, desktop_settings):
    browser, page = await open_live(signed_in, rdp_resource)
    await browser.send("5.mouse,3.100,3.100,1.0;")
    await browser.until(lambda op, _args: op == "sync" and _drawn(browser.instructions) != [])
    await browser.send("10.disconnect;")
    await browser.until_closed()
    path = Path(desktop_settings.PORTAL_RECORDINGS_DIR) / page.session_id
    await wait_for_digest(page.session_id)
    content = path.read_bytes()
    assert b"4.size," in content and b"3.img," in content and b"4.sync," in content
    assert rdp_target.password.encode() not in content
    row = await database_sync_to_async(StreamSession.objects.get)(pk=page.session_id)
    assert row.recording_size == len(content) and len(row.recording_sha256) == 64
