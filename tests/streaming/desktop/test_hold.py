"""While input is held for a fresh code, nothing the browser sends reaches the target.

The rule is a pure table (:func:`streaming.desktop.hold.while_held`); the tunnel test holds a
real session against guacd and x11vnc and looks at what the relay handed guacd's socket.
"""

from __future__ import annotations

import json
import time
from importlib import import_module

import pytest
from channels.db import database_sync_to_async
from django.conf import settings

from portal.audit.models import AuditEvent
from streaming.desktop import broker, groups
from streaming.desktop.guacamole.guacd import GuacdConnection
from streaming.desktop.hold import WhileHeld, while_held
from streaming.desktop.models import StreamSession
from tests.conftest import sign_in
from tests.factories import totp_code
from tests.streaming.desktop.conftest import open_live


@pytest.mark.parametrize(("opcode", "fate"), [
    ("key", WhileHeld.DROP), ("mouse", WhileHeld.DROP), ("touch", WhileHeld.DROP),
    ("clipboard", WhileHeld.REFUSE), ("file", WhileHeld.REFUSE), ("put", WhileHeld.REFUSE),
    ("get", WhileHeld.REFUSE), ("pipe", WhileHeld.REFUSE), ("argv", WhileHeld.REFUSE),
    ("audio", WhileHeld.REFUSE),
    ("blob", WhileHeld.ABORT), ("end", WhileHeld.ABORT),
    ("ack", WhileHeld.DEFER),
    ("sync", WhileHeld.FORWARD), ("nop", WhileHeld.FORWARD), ("size", WhileHeld.FORWARD),
    ("disconnect", WhileHeld.FORWARD),
    ("something-new", WhileHeld.DROP),
])
def test_during_a_hold_only_flow_control_goes_on_and_every_data_stream_stops(opcode, fate):
    assert while_held(opcode) is fate


@pytest.fixture
def signed_in(client, employee):
    sign_in(client, employee)
    return client


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
async def test_a_held_session_passes_no_paste_upload_or_ack_to_guacd_until_a_fresh_code(
        signed_in, vnc_resource, stream_tier, employee, monkeypatch):
    stream_tier.clipboard_in = "allow"
    stream_tier.file_transfer = "allow"
    await database_sync_to_async(stream_tier.save)()
    to_guacd: list[str] = []
    real_queue = GuacdConnection.queue_text

    def recording_queue(self: GuacdConnection, text: str) -> bool:
        to_guacd.append(text)
        return real_queue(self, text)

    monkeypatch.setattr(GuacdConnection, "queue_text", recording_queue)
    browser, page = await open_live(signed_in, vnc_resource)
    await browser.send("9.clipboard,1.0,10.text/plain;4.blob,1.0,8.aGVsbG8=;")  # a paste under way
    await browser.send("0.,4.ping,1.1;")
    await browser.until(lambda op, args: op == "" and args == ("ping", "1"))

    def age_mfa() -> None:
        session = import_module(settings.SESSION_ENGINE).SessionStore(page.cookie)
        session["mfa_time"] = int(time.time()) - 3600
        session.save()
        broker.push(groups.for_user(employee.pk), {"type": "desktop.recheck"})

    await database_sync_to_async(age_mfa)()
    await browser.until(lambda op, args: op == "portal" and args[0] == "step_up", timeout=3)
    to_guacd.clear()

    await browser.send("4.blob,1.0,8.c2VjcmV0;")  # the rest of the paste
    _op, args = await browser.until(lambda op, args: op == "ack" and args[0] == "0", timeout=3)
    assert args[2] == str(0x0301) and "fresh code" in args[1]
    await browser.send("3.end,1.0;")
    await browser.send("9.clipboard,1.1,10.text/plain;4.blob,1.1,8.c2VjcmV0;3.end,1.1;")
    await browser.send("4.file,1.2,10.text/plain,10.secret.txt;4.blob,1.2,8.c2VjcmV0;3.end,1.2;")
    await browser.send("3.put,1.0,1.3,10.text/plain,4.a.md;3.get,1.0,4.a.md;")
    await browser.send("3.ack,1.7,2.OK,1.0;3.key,5.65307,1.1;5.mouse,2.10,2.10,1.1;")
    await browser.send("4.sync,2.99;0.,4.ping,1.2;")
    await browser.until(lambda op, args: op == "" and args == ("ping", "2"))
    refused = {args[0] for op, args in browser.instructions if op == "ack" and args[2] == str(0x0301)}
    assert refused == {"0", "1", "2", "3"}
    held_traffic = "".join(to_guacd)
    assert held_traffic == "4.sync,2.99;"  # flow control only
    assert (await database_sync_to_async(StreamSession.objects.get)(pk=page.session_id)).state == "live"

    def step_up() -> int:
        return signed_in.post(f"/desktop/{vnc_resource.slug}/sessions/{page.session_id}/step-up/",
                              {"otp_token": totp_code(employee.totp, offset_steps=1)}).status_code

    assert await database_sync_to_async(step_up)() == 200
    await browser.until(lambda op, args: op == "portal" and args[0] == "resumed", timeout=3)
    assert "3.ack,1.7,2.OK,1.0;" in "".join(to_guacd)  # guacd's stream goes on after the code
    events = await database_sync_to_async(lambda: list(
        AuditEvent.objects.filter(action__in=["desktop.clipboard.in", "desktop.file.transfer"])
        .order_by("seq").values_list("action", "outcome", "detail")))()
    assert all(outcome == "held" for _action, outcome, _detail in events), events
    assert [(a, d.get("name", ""), d.get("size")) for a, _o, d in events] == [
        ("desktop.clipboard.in", "", 5),  # the paste cut off: what passed before the hold
        ("desktop.clipboard.in", "", None),
        ("desktop.file.transfer", "secret.txt", None),
        ("desktop.file.transfer", "a.md", None),
        ("desktop.file.transfer", "a.md", None),
    ]
    await browser.send("5.mouse,2.20,2.20,1.0;0.,4.ping,1.3;")
    await browser.until(lambda op, args: op == "" and args == ("ping", "3"))
    assert "5.mouse,2.20,2.20,1.0;" in "".join(to_guacd)
    assert json.loads(browser.portal_notices("resumed")[0])["message"]
    await browser.comm.disconnect()
