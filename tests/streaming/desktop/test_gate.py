"""The tunnel's gate, table by table: what each browser or guacd instruction may do.

Pure: instructions are read from wire text with the real parser, and the gate's answer is
looked at as data. No Channels, no guacd (the end-to-end tests drive the same gate through
the relay against real guacd and x11vnc).
"""

from __future__ import annotations

import base64
import hashlib

import pytest

from streaming.desktop.gate import (
    DROP,
    FORWARD,
    INPUT,
    Audit,
    By,
    Gate,
    Notice,
    OwnerGate,
    Step,
    WatcherGate,
    end_status,
)
from streaming.desktop.guacamole.protocol import (
    BROWSER_LIMITS,
    GUACD_LIMITS,
    Instruction,
    InstructionReader,
    Status,
    encode,
    encode_utf16,
)
from streaming.desktop.models import EndReason

ALL_ALLOWED = {"clipboard_in": "allow", "clipboard_out": "allow", "file_transfer": "allow"}


def from_browser(wire: str) -> Instruction:
    reader = InstructionReader(BROWSER_LIMITS)
    reader.feed_text(wire)
    ins = reader.pop()
    assert ins is not None and reader.pop() is None
    return ins


def from_guacd(wire: str) -> Instruction:
    reader = InstructionReader(GUACD_LIMITS)
    reader.feed_text(wire)
    ins = reader.pop()
    assert ins is not None
    return ins


def browser_says(gate: Gate, *wires: str) -> list[Step]:
    return [gate.from_browser(from_browser(wire)) for wire in wires]


def ack(stream: str, message: str, status: int) -> str:
    return encode_utf16("ack", stream, message, status)


# -- the owner's browser -------------------------------------------------------------------

@pytest.mark.parametrize(("wire", "step"), [
    ("3.key,5.65307,1.1;", INPUT),
    ("5.mouse,2.10,2.20,1.1;", INPUT),
    ("5.touch,1.0,2.10,2.10,1.5,1.5,1.0,1.1;", INPUT),
    ("4.sync,2.99;", FORWARD),
    ("3.nop;", FORWARD),
    ("4.size,4.1280,3.800;", FORWARD),
    ("3.ack,1.7,2.OK,1.0;", FORWARD),
    ("4.blob,1.9,4.aGk=;", FORWARD),  # a stream the gate does not watch (guacd's own)
])
def test_input_and_flow_control_from_the_owner_go_on_to_guacd(wire, step):
    assert OwnerGate({}).from_browser(from_browser(wire)) is step


def test_the_browsers_ping_is_answered_by_the_relay_and_never_reaches_guacd():
    step = OwnerGate({}).from_browser(from_browser("0.,4.ping,3.123;"))
    assert step == Step(replies=("0.,4.ping,3.123;",)) and not step.forward


def test_closing_the_desktop_from_the_browser_ends_the_session_in_the_persons_name():
    (step,) = browser_says(OwnerGate({}), "10.disconnect;")
    assert not step.forward
    assert (step.end.reason, step.end.message, step.end.by) == (EndReason.CLOSED, "You closed the desktop.", By.USER)


@pytest.mark.parametrize("wire", ["4.pipe,1.4,10.text/plain,3.tty;", "4.argv,1.4,10.text/plain,5.width;",
                                  "5.audio,1.4,9.audio/ogg;"])
def test_pipes_arguments_and_audio_are_refused_and_their_data_never_follows(wire):
    gate = OwnerGate(ALL_ALLOWED)
    opened, data, end, later = browser_says(gate, wire, "4.blob,1.4,4.aGk=;", "3.end,1.4;", "4.blob,1.4,4.aGk=;")
    assert opened == Step(replies=(ack("4", "Not allowed on this portal.", Status.CLIENT_FORBIDDEN),))
    assert data is DROP and end is DROP
    assert later is FORWARD  # the stream index is free again once ended


# what a stream-opening instruction is, under each setting of the tier's control
OPENINGS = [
    ("9.clipboard,1.3,10.text/plain;", "clipboard_in", "clipboard.in", "in", "", "3",
     "Pasting into this desktop"),
    ("4.file,1.3,10.text/plain,5.a.txt;", "file_transfer", "file.transfer", "upload", "a.txt", "3",
     "File transfer"),
    ("3.put,1.0,1.3,10.text/plain,5.a.txt;", "file_transfer", "file.transfer", "upload", "a.txt", "3",
     "File transfer"),
    ("3.get,1.0,5.a.txt;", "file_transfer", "file.transfer", "download", "a.txt", None, "File transfer"),
]


@pytest.mark.parametrize(("wire", "control", "kind", "direction", "name", "stream", "words"), OPENINGS)
def test_a_paste_or_file_transfer_goes_on_where_the_tier_allows_it(wire, control, kind, direction, name, stream,
                                                                     words):
    assert browser_says(OwnerGate({control: "allow"}), wire) == [FORWARD]


@pytest.mark.parametrize(("wire", "control", "kind", "direction", "name", "stream", "words"), OPENINGS)
def test_a_paste_or_file_transfer_is_refused_and_audited_where_the_tier_denies_it(
        wire, control, kind, direction, name, stream, words):
    gate = OwnerGate({control: "deny"})
    (step,) = browser_says(gate, wire)
    assert not step.forward
    assert step.audits == (Audit(f"desktop.{kind}", "denied",
                                 {"direction": direction, "name": name, "control": "deny"}),)
    expected_replies = () if stream is None else (ack(stream, f"{words} is not allowed on this tier.",
                                                      Status.CLIENT_FORBIDDEN),)
    assert step.replies == expected_replies
    if stream is not None:
        assert browser_says(gate, f"4.blob,1.{stream},4.aGk=;") == [DROP]


def test_an_unset_control_is_a_denial():
    (step,) = browser_says(OwnerGate({}), "9.clipboard,1.3,10.text/plain;")
    assert not step.forward and step.audits[0].outcome == "denied"


@pytest.mark.parametrize(("allowed", "forwards"), [(True, True), (False, False)])
def test_a_control_needing_a_step_up_asks_the_live_decision_before_the_stream_opens(allowed, forwards):
    gate = OwnerGate({"file_transfer": "step_up"})
    (asked,) = browser_says(gate, "4.file,1.3,10.text/plain,5.a.txt;")
    assert asked.ask is not None and asked.ask.kind == "file.transfer" and not asked.forward
    step = gate.answer(asked.ask, allowed)
    assert step.forward is forwards
    if not allowed:
        assert step.notices == (Notice("step_up_for_control", {
            "control": "file.transfer", "message": "File transfer needs a fresh code. Enter one, then try again."}),)
        assert step.audits[0].detail["control"] == "step_up"
        assert step.replies == (ack("3", "File transfer is not allowed on this tier.", Status.CLIENT_FORBIDDEN),)


def test_an_allowed_upload_is_audited_at_its_end_with_its_size_and_hash():
    gate = OwnerGate(ALL_ALLOWED)
    blob = base64.b64encode(b"secret").decode()
    steps = browser_says(gate, "4.file,1.2,10.text/plain,10.secret.txt;", f"4.blob,1.2,{len(blob)}.{blob};",
                         "3.end,1.2;")
    assert [s.forward for s in steps] == [True, True, True]
    assert steps[-1].audits == (Audit("desktop.file.transfer", "allowed", {
        "direction": "upload", "size": 6, "name": "secret.txt", "sha256": hashlib.sha256(b"secret").hexdigest()}),)


# -- a hold for a fresh code ---------------------------------------------------------------

HELD = "Paused until a fresh code is entered. Try again after entering it."


def test_holding_the_session_tells_the_page_and_the_audit_trail():
    step = OwnerGate({}).hold("A fresh code is needed.", 120)
    assert step.audits == (Audit("desktop.hold", "step_up", {"message": "A fresh code is needed."}),)
    assert step.notices == (Notice("step_up", {"message": "A fresh code is needed.", "grace_seconds": 120}),)


@pytest.mark.parametrize(("wire", "forward", "replies", "audit"), [
    ("3.key,5.65307,1.1;", False, (), None),
    ("5.mouse,2.10,2.10,1.1;", False, (), None),
    ("4.sync,2.99;", True, (), None),
    ("4.size,4.1280,3.800;", True, (), None),
    ("9.clipboard,1.1,10.text/plain;", False, (ack("1", HELD, Status.CLIENT_UNAUTHORIZED),),
     Audit("desktop.clipboard.in", "held", {"direction": "in", "name": ""})),
    ("4.file,1.2,10.text/plain,5.a.txt;", False, (ack("2", HELD, Status.CLIENT_UNAUTHORIZED),),
     Audit("desktop.file.transfer", "held", {"direction": "upload", "name": "a.txt"})),
    ("3.put,1.0,1.3,10.text/plain,4.a.md;", False, (ack("3", HELD, Status.CLIENT_UNAUTHORIZED),),
     Audit("desktop.file.transfer", "held", {"direction": "upload", "name": "a.md"})),
    ("3.get,1.0,4.a.md;", False, (), Audit("desktop.file.transfer", "held", {"direction": "download", "name": "a.md"})),
    ("4.pipe,1.4,10.text/plain,3.tty;", False, (ack("4", HELD, Status.CLIENT_UNAUTHORIZED),), None),
    ("3.ack,1.7,2.OK,1.0;", False, (), None),  # deferred, not lost
])
def test_while_held_nothing_the_browser_sends_reaches_the_target_but_flow_control(wire, forward, replies, audit):
    gate = OwnerGate(ALL_ALLOWED)
    gate.hold("A fresh code is needed.", 120)
    (step,) = browser_says(gate, wire)
    assert step.forward is forward and step.input is False
    assert step.replies == replies
    assert step.audits == ((audit,) if audit else ())


def test_a_paste_under_way_is_cut_off_by_a_hold_and_audited_with_what_had_passed():
    gate = OwnerGate(ALL_ALLOWED)
    browser_says(gate, "9.clipboard,1.0,10.text/plain;", "4.blob,1.0,8.aGVsbG8=;")
    gate.hold("A fresh code is needed.", 120)
    cut, end = browser_says(gate, "4.blob,1.0,8.c2VjcmV0;", "3.end,1.0;")
    assert not cut.forward and cut.replies == (ack("0", HELD, Status.CLIENT_UNAUTHORIZED),)
    assert cut.audits == (Audit("desktop.clipboard.in", "held", {"direction": "in", "size": 5}),)
    assert end is DROP


def test_a_fresh_code_releases_the_hold_and_sends_guacd_the_acks_held_back_as_they_came():
    gate = OwnerGate({})
    gate.hold("A fresh code is needed.", 120)
    browser_says(gate, "3.ack,1.7,2.OK,1.0;", "3.ack,1.8,2.OK,1.0;", "3.ack,1.7,4.Done,1.0;")
    step = gate.release()
    assert step.to_guacd == "3.ack,1.7,4.Done,1.0;3.ack,1.8,2.OK,1.0;"  # the latest per stream
    assert step.audits == (Audit("desktop.hold", "released", {}),)
    assert step.notices == (Notice("resumed", {"message": "Code accepted: the session goes on."}),)
    assert browser_says(gate, "3.key,5.65307,1.1;") == [INPUT]


# -- an admin watching ---------------------------------------------------------------------

@pytest.mark.parametrize("wire", ["4.sync,2.99;", "3.nop;", "3.ack,1.7,2.OK,1.0;"])
def test_a_watchers_flow_control_goes_on_so_the_view_keeps_up(wire):
    assert browser_says(WatcherGate({}, "w-1"), wire) == [FORWARD]


def test_a_watchers_input_is_dropped_counted_and_audited_once_per_kind():
    gate = WatcherGate(ALL_ALLOWED, "w-1")
    steps = browser_says(gate, "3.key,5.65307,1.1;", "3.key,5.65307,1.0;", "5.mouse,2.10,2.10,1.0;",
                         "4.size,4.1280,3.800;")
    assert not any(s.forward for s in steps)
    assert [a for s in steps for a in s.audits] == [
        Audit("desktop.watch.input", "refused", {"watch": "w-1", "opcode": op}) for op in ("key", "mouse", "size")]
    assert gate.refused_input == 4


def test_a_watcher_cannot_paste_even_where_the_owner_may():
    (step,) = browser_says(WatcherGate(ALL_ALLOWED, "w-1"), "9.clipboard,1.1,10.text/plain;")
    assert not step.forward
    assert step.replies == (ack("1", "This is a read-only view.", Status.CLIENT_FORBIDDEN),)


def test_a_watcher_closing_the_view_ends_only_the_view():
    (step,) = browser_says(WatcherGate({}, "w-1"), "10.disconnect;")
    assert (step.end.reason, step.end.message, step.end.by) == (EndReason.CLOSED, "You closed the view.", By.USER)


def test_a_watcher_is_read_only_and_gets_nothing_out_of_the_desktop():
    gate = WatcherGate(ALL_ALLOWED, "w-1")
    assert gate.obligations["read_only"] is True
    step = gate.from_guacd(from_guacd(encode("clipboard", 5, "text/plain")))
    assert not step.forward and step.audits[0].outcome == "denied"


# -- guacd's side --------------------------------------------------------------------------

@pytest.mark.parametrize(("run", "read"), [
    (encode("img", 1, 14, 0, "image/png", 0, 0) + encode("blob", 1, "iVBORw0KGgo=") + encode("sync", 42), False),
    (encode("clipboard", 5, "text/plain"), True),
    (encode("file", 5, "text/plain", "a.txt"), True),
    (encode("error", "Aborted. See logs.", 0x0207), True),
])
def test_only_runs_that_can_carry_a_clipboard_a_file_or_an_error_are_read_one_by_one(run, read):
    assert OwnerGate({}).watches_guacd(run) is read


def test_while_a_copy_out_is_under_way_every_run_is_read():
    gate = OwnerGate(ALL_ALLOWED)
    gate.from_guacd(from_guacd(encode("clipboard", 5, "text/plain")))
    assert gate.watches_guacd(encode("sync", 42))


@pytest.mark.parametrize(("control", "forwards", "outcome"), [("allow", True, "allowed"), ("deny", False, None)])
def test_a_copy_out_of_the_desktop_follows_the_tier_and_is_audited(control, forwards, outcome):
    gate = OwnerGate({"clipboard_out": control})
    steps = [gate.from_guacd(from_guacd(w)) for w in (
        encode("clipboard", 5, "text/plain"), encode("blob", 5, "aGVsbG8="), encode("end", 5))]
    assert [s.forward for s in steps] == [forwards] * 3
    if outcome:
        assert steps[-1].audits == (Audit("desktop.clipboard.out", "allowed", {"direction": "out", "size": 5}),)
    else:
        assert steps[0].audits == (Audit("desktop.clipboard.out", "denied",
                                         {"direction": "out", "name": "", "control": "deny"}),)
        assert not gate.refused_out  # the stream's end frees it


def test_guacds_error_ends_the_session_with_an_honest_reason_and_keeps_its_words_for_the_log():
    step = OwnerGate({}).from_guacd(from_guacd(encode("error", "Aborted. See logs.", 0x0301)))
    assert not step.forward
    assert (step.end.reason, step.end.by) == (EndReason.TARGET_REFUSED, By.TARGET)
    assert dict(step.end.log) == {"guacd_message": "Aborted. See logs.", "status": str(0x0301)}
    assert end_status(step.end.reason) == Status.CLIENT_UNAUTHORIZED


# -- raw slices ----------------------------------------------------------------------------

def test_an_allowed_instruction_goes_to_guacd_as_the_very_text_it_arrived_as():
    wire = "5.mouse,3.100,2.20,1.1;"
    ins = from_browser(wire)
    assert OwnerGate({}).from_browser(ins).forward and ins.for_guacd() is ins.raw and ins.raw == wire


def test_an_emoji_is_re_counted_for_each_side_and_only_that_instruction_is_re_encoded():
    browser_wire = "4.file,1.2,10.text/plain,6.🙂.txt;"  # the browser counts the emoji as 2
    ins = from_browser(browser_wire)
    assert ins.args[2] == "🙂.txt"
    assert ins.for_guacd() == "4.file,1.2,10.text/plain,5.🙂.txt;"  # guacd counts it as 1
    guacd_ins = from_guacd(ins.for_guacd())
    assert guacd_ins.for_browser() == browser_wire
