"""The Guacamole wire format, without a network: boundaries, UTF-8, limits, browser rules."""

from __future__ import annotations

import pytest

from streaming.desktop.guacamole.browser import check_browser_instruction
from streaming.desktop.guacamole.protocol import (
    BROWSER_LIMITS,
    GUACD_LIMITS,
    Instruction,
    InstructionReader,
    Limits,
    ProtocolError,
    encode,
    encode_utf16,
    to_browser_counting,
)


def test_encoding_counts_characters_not_bytes():
    assert encode("name", "héllo", "🙂") == "4.name,5.héllo,1.🙂;"
    assert encode("", "ping", 17) == "0.,4.ping,2.17;"


def test_a_stream_split_at_every_byte_yields_the_same_instructions():
    wire = (encode("size", 0, 1024, 768) + encode("name", "Bürö ✓ 🙂;,.") + encode("sync", 42)).encode()
    reader = InstructionReader(GUACD_LIMITS)
    got = []
    for i in range(len(wire)):
        reader.feed(wire[i:i + 1])  # splits multi-byte characters too
        while (ins := reader.pop()) is not None:
            got.append(ins)
    reader.finish()
    assert got == [Instruction("size", ("0", "1024", "768")), Instruction("name", ("Bürö ✓ 🙂;,.",)),
                   Instruction("sync", ("42",))]


def test_take_text_returns_only_whole_instructions():
    reader = InstructionReader(GUACD_LIMITS)
    reader.feed(b"4.sync,2.42;3.img,1.1,")
    assert reader.take_text() == "4.sync,2.42;"
    assert reader.take_text() == ""
    assert reader.pending == len("3.img,1.1,")
    reader.feed(b"9.image/png;4.sync")
    assert reader.take_text() == "3.img,1.1,9.image/png;"
    assert reader.pending == len("4.sync")


def test_a_semicolon_inside_a_value_is_not_a_boundary():
    reader = InstructionReader(GUACD_LIMITS)
    reader.feed(b"4.name,5.a;b;c")
    assert reader.take_text() == ""
    reader.feed(b";")
    assert reader.pop() == Instruction("name", ("a;b;c",))


def test_many_instructions_stay_consistent_across_compaction():
    reader = InstructionReader(GUACD_LIMITS)
    parts = [encode("blob", i, "x" * (i % 50)) for i in range(2000)]
    wire = "".join(parts).encode()
    out = []
    for i in range(0, len(wire), 97):
        reader.feed(wire[i:i + 97])
        out.append(reader.take_text())
    assert "".join(out) == "".join(parts)


@pytest.mark.parametrize("wire, why", [
    (b"4.size,x.1;", "not a decimal number"),
    (b"-1.a;", "not a decimal number"),
    (b".a;", "not a decimal number"),
    (b"1.a:", "followed by"),
    (b"1234567.", "short decimal"),
    (b"\xff\xfe", "UTF-8"),
    (b"99999.", "longer than"),
])
def test_malformed_streams_raise_protocol_error(wire, why):
    reader = InstructionReader(BROWSER_LIMITS)
    with pytest.raises(ProtocolError, match=why):
        reader.feed(wire)


def test_an_instruction_that_never_ends_cannot_grow_the_buffer_past_the_limit():
    reader = InstructionReader(Limits(max_instruction_length=100, max_elements=100))
    reader.feed(b"3.key")
    with pytest.raises(ProtocolError, match="longer than 100"):
        for _ in range(100):
            reader.feed(b",1.a")


def test_too_many_elements_is_refused():
    reader = InstructionReader(BROWSER_LIMITS)
    with pytest.raises(ProtocolError, match="more than 16 elements"):
        reader.feed_text("3.key" + ",1.1" * 20 + ";")


def test_a_stream_that_ends_mid_instruction_or_mid_character_is_an_error():
    reader = InstructionReader(GUACD_LIMITS)
    reader.feed(b"4.sync,2.4")
    with pytest.raises(ProtocolError, match="inside an instruction"):
        reader.finish()
    reader = InstructionReader(GUACD_LIMITS)
    reader.feed("1.é".encode()[:-1])
    with pytest.raises(ProtocolError, match="UTF-8"):
        reader.finish()


@pytest.mark.parametrize("wire", [
    "3.key,5.65307,1.1;", "5.mouse,3.100,3.200,1.1;", "4.size,4.1280,3.720;", "4.sync,13.1700000000000;",
    "0.,4.ping,13.1700000000000;", "9.clipboard,1.0,10.text/plain;", "4.blob,1.0,8.aGVsbG8=;", "3.end,1.0;",
    "3.ack,1.1,2.OK,1.0;", "3.nop;", "10.disconnect;", "4.file,1.2,24.application/octet-stream,5.a.txt;",
    "5.touch,1.0,2.10,2.20,1.5,1.5,1.0,1.1;",
])
def test_instructions_a_browser_legitimately_sends_pass(wire):
    reader = InstructionReader(BROWSER_LIMITS)
    reader.feed_text(wire)
    check_browser_instruction(reader.pop())


@pytest.mark.parametrize("instruction, why", [
    (Instruction("select", ("vnc",)), "not allowed"),
    (Instruction("connect", ("h", "5900")), "not allowed"),
    (Instruction("img", ("1", "14", "0", "image/png", "0", "0")), "not allowed"),
    (Instruction("", ("shell", "rm")), "internal instruction 'shell' is not allowed"),
    (Instruction("", ()), "without a name"),
    (Instruction("key", ("65307",)), "1 arguments"),
    (Instruction("key", ("65307", "yes")), "malformed"),
    (Instruction("mouse", ("1e9", "0", "0")), "malformed"),
    (Instruction("size", ("0", "768")), "malformed"),
    (Instruction("blob", ("0", "not base64!")), "malformed"),
    (Instruction("blob", ("0", "A" * 9000)), "malformed"),
    (Instruction("clipboard", ("0", "../../etc")), "malformed"),
])
def test_everything_else_from_the_browser_is_refused(instruction, why):
    with pytest.raises(ProtocolError, match=why):
        check_browser_instruction(instruction)


# -- the browser counts UTF-16 code units (guacamole-common-js 1.5.0), guacd code points -------


def test_the_browsers_emoji_file_name_is_read_in_its_counting_and_given_to_guacd_in_code_points():
    # What guacamole-common-js sends for a file "report 😀.txt": String.length counts the emoji twice.
    wire = "4.file,1.1,10.text/plain,13.report 😀.txt;5.mouse,2.10,2.10,1.0;"
    reader = InstructionReader(BROWSER_LIMITS)
    reader.feed_text(wire)
    assert reader.pending == 0
    file, mouse = reader.pop(), reader.pop()
    assert file == Instruction("file", ("1", "text/plain", "report 😀.txt"))
    assert mouse == Instruction("mouse", ("10", "10", "0"))
    check_browser_instruction(file)
    assert file.encode() == "4.file,1.1,10.text/plain,12.report 😀.txt;"  # what guacd reads


def test_a_browser_message_split_inside_an_emoji_value_waits_for_the_rest():
    reader = InstructionReader(BROWSER_LIMITS)
    reader.feed_text("4.file,1.1,10.text/plain,6.ab😀")
    assert reader.pop() is None and reader.pending
    reader.feed_text("😀;")
    assert reader.pop() == Instruction("file", ("1", "text/plain", "ab😀😀"))


@pytest.mark.parametrize("wire", [
    "4.file,1.1,10.text/plain,1.😀;",  # a length that ends between the two halves of the emoji
    "4.file,1.1,10.text/plain,2.😀😀;",  # too short in UTF-16 units: the terminator is an emoji
])
def test_a_browser_length_that_splits_an_emoji_is_refused(wire):
    reader = InstructionReader(BROWSER_LIMITS)
    with pytest.raises(ProtocolError):
        reader.feed_text(wire)


def test_code_point_lengths_from_a_browser_would_be_read_short_and_refused():
    reader = InstructionReader(BROWSER_LIMITS)
    with pytest.raises(ProtocolError):
        reader.feed_text("4.file,1.1,10.text/plain,12.report 😀.txt;")


def test_guacd_text_is_rewritten_for_the_browsers_counting_only_when_it_must():
    plain = encode("sync", 42) + encode("name", "Bürö ✓")
    assert to_browser_counting(plain) is plain  # no character outside the BMP: untouched
    run = encode("file", 2, "text/plain", "café 😀.txt") + encode("sync", 43)
    assert to_browser_counting(run) == "4.file,1.2,10.text/plain,11.café 😀.txt;4.sync,2.43;"
    assert encode_utf16("ack", 1, "😀", 0) == "3.ack,1.1,2.😀,1.0;"


def test_what_the_relay_gives_the_browser_reads_back_as_the_same_instructions():
    as_browser = Limits(GUACD_LIMITS.max_instruction_length, GUACD_LIMITS.max_elements, utf16_lengths=True)
    original = [Instruction("file", ("2", "text/plain", "🙂🙃 x")), Instruction("error", ("👋 bye", "515"))]
    reader = InstructionReader(as_browser)
    reader.feed_text(to_browser_counting("".join(i.encode() for i in original)))
    assert [reader.pop(), reader.pop()] == original
