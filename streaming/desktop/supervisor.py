"""The session side of one desktop tunnel: carries out what the gate and the clock decide.

The relay (:mod:`.consumer`) owns the sockets; the pure gate (:mod:`.gate`) says what each
instruction may do and the pure clock (:mod:`.clock`) when to decide again, warn and end.
The :class:`Supervisor` does the rest, each database step in a worker thread: the live
decision a ``step_up`` control needs, audits and the page's notices, the periodic (or pushed)
re-authorization, holding input for a fresh code, and the session's end record. It talks to
the relay only through :class:`Relay`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, Protocol

from channels.db import database_sync_to_async as in_thread
from django.conf import settings

from portal.audit.chain import record
from streaming.desktop import broker, groups
from streaming.desktop.clock import HoldChange, SupervisorClock, Timing
from streaming.desktop.gate import FORWARD, By, Ending, Gate, OwnerGate, Step, WatcherGate
from streaming.desktop.guacamole.protocol import GUACD_LIMITS, InstructionReader, encode_utf16
from streaming.desktop.models import EndReason, StreamSession, StreamWatch
from streaming.desktop.opening import Opening, status_values
from streaming.desktop.reauth import reauthorize, reauthorize_watcher
from streaming.desktop.signins import current_session

__all__ = ["Relay", "Supervisor"]


class Relay(Protocol):
    """What the supervisor needs of the relay."""

    ended: bool

    async def to_browser(self, text: str) -> None:
        """Send whole instructions to the browser."""

    def to_guacd(self, text: str) -> None:
        """Queue whole instructions for guacd and flush them (never blocks)."""

    def flush_input(self) -> None:
        """Hand the browser input queued so far to guacd."""

    async def end(self, reason: EndReason, message: str, *, by: str = "portal") -> None:
        """End the session with a reason and a sentence for the person."""


class Supervisor:
    """One tunnel's session: who, which gate, which clock; the relay's database side."""

    clock: SupervisorClock  # set when the desktop is up (the limits run from then)

    def __init__(self, relay: Relay, opening: Opening, stream: StreamSession,
                 watch: StreamWatch | None) -> None:
        self.relay = relay
        self.user, self.client_address, self.sign_in = opening.user, opening.client_address, opening.sign_in
        self.session_key = opening.session_key
        self.stream, self.watch = stream, watch
        self.gate: Gate = (WatcherGate(stream.obligations, str(watch.pk)) if watch
                           else OwnerGate(stream.obligations))
        self.pushed_by = ""
        self.wake = asyncio.Event()

    def groups(self) -> tuple[str, ...]:
        """The channel-layer groups whose pushes reach this tunnel (revocation, kill, step-up)."""
        stream, user_id = self.stream, self.user.pk
        if self.watch is not None:  # a kill of the watched session ends the view; a lock reaches the admin
            return groups.for_watch(self.watch.pk), groups.for_session(stream.pk), groups.for_user(user_id)
        return (groups.for_session(stream.pk), groups.for_user(user_id),
                groups.for_resource(stream.resource_id), groups.for_tier(stream.resource.tier_id))

    async def start(self, opening: Opening) -> SupervisorClock:
        """The desktop is up: the limits run from now, and the page's status bar says them."""
        self.clock = SupervisorClock(Timing.from_obligations(
            self.gate.obligations, recheck_max=settings.PORTAL_DESKTOP_REAUTH_MAX_SECONDS,
            warn=settings.PORTAL_DESKTOP_WARN_SECONDS, grace=settings.PORTAL_DESKTOP_STEP_UP_GRACE_SECONDS,
            watcher=self.watch is not None), time.monotonic())
        timing = self.clock.timing
        await self.notice("status", **status_values(opening, self.stream, self.watch, self.gate.obligations,
                                                    timing.max_seconds, timing.idle_seconds))
        return self.clock

    # -- instructions ---------------------------------------------------------------------

    async def carry_out(self, step: Step, *, ending_now: bool = True) -> Step:
        """Do what the gate said besides forwarding; a control's live decision is asked first."""
        if step.ask is not None:
            self.relay.flush_input()  # input queued before this must not wait on the decision
            decision = await in_thread(self._decide_control)(step.ask.kind)
            step = self.gate.answer(step.ask, decision is not None and decision.allowed)
        for audit in step.audits:
            await self.audit(audit.action, audit.outcome, dict(audit.detail))
        if step.to_guacd and not self.relay.ended:
            self.relay.to_guacd(step.to_guacd)
        for notice in step.notices:
            await self.notice(notice.kind, **notice.values)
        for reply in step.replies:
            await self.relay.to_browser(reply)
        if step.end is not None and ending_now:
            by = self.user.get_username() if step.end.by is By.USER else step.end.by.value
            await self.relay.end(step.end.reason, step.end.message, by=by)
        return step

    def _decide_control(self, kind: str) -> Any:
        from streaming.desktop.access import decide_control

        user = type(self.user).objects.get(pk=self.user.pk)
        _key, session = current_session(user, self.session_key, self.sign_in)
        return decide_control(user, session, self.client_address, self.stream.resource_id, kind)

    async def from_guacd(self, text: str) -> tuple[str, Ending | None]:
        """A run from guacd the gate must read (clipboard, file or error instructions): what
        goes on to the browser, and guacd's error if it sent one (terminal; sent after the run)."""
        reader = InstructionReader(GUACD_LIMITS)
        reader.feed_text(text)
        kept: list[str] = []
        ending = None
        while (ins := reader.pop()) is not None:
            step = self.gate.from_guacd(ins)
            if step is not FORWARD:
                step = await self.carry_out(step, ending_now=False)
                ending = step.end or ending
            if step.forward:
                kept.append(ins.for_browser())
        return "".join(kept), ending

    # -- continuous authorization, idle, maximum duration ---------------------------------

    def pushed(self, by: str = "") -> None:
        """Something this session depends on changed: decide again now."""
        # Several pushes may arrive before the re-check runs: keep the one that names a person.
        self.pushed_by = by or self.pushed_by
        self.wake.set()

    def stepped_up(self, user_id: Any, session_key: str) -> None:
        """The user entered a fresh code on the desktop page (which rotated the session key)."""
        if user_id == self.user.pk and session_key:
            self.session_key = session_key
            self.wake.set()

    async def run(self) -> None:
        """Wake on a push or every half second; do what the clock says is due."""
        while not self.relay.ended:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=0.5)
            pushed = self.wake.is_set()
            self.wake.clear()
            now = time.monotonic()
            if self.clock.recheck_due(now, pushed=pushed):
                await self.recheck()
            if not self.relay.ended and (call := self.clock.call(now)) is not None:
                if call.end is not None:
                    await self.relay.end(call.end, call.message)
                else:
                    await self.notice("warning", message=call.message)

    async def recheck(self) -> None:
        """Decide again: end, hold input for a fresh code, release a hold, or apply new limits."""
        if self.watch is not None:
            verdict = await in_thread(reauthorize_watcher)(self.user.pk, self.session_key, self.stream.pk,
                                                           self.sign_in)
        else:
            verdict = await in_thread(reauthorize)(
                self.user.pk, self.session_key, self.client_address, self.stream.resource_id,
                self.gate.obligations, self.sign_in)
        self.session_key = verdict.session_key or self.session_key
        by, self.pushed_by = self.pushed_by or "portal", ""
        if verdict.outcome == "end":
            await self.relay.end(verdict.reason, verdict.message, by=by)
            return
        change = self.clock.after_verdict(time.monotonic(), verdict.outcome)
        if change is not HoldChange.NONE and isinstance(self.gate, OwnerGate):
            await self.carry_out(self.gate.hold(verdict.message, self.clock.timing.grace_seconds)
                                 if change is HoldChange.HELD else self.gate.release())
        if verdict.obligations:
            self.gate.obligations.update(verdict.obligations)
            self.clock.retime(self.gate.obligations)

    # -- the page and the records ---------------------------------------------------------

    async def notice(self, kind: str, **values: Any) -> None:
        """A portal instruction for the page's status bar; guacamole-common-js ignores it."""
        await self.relay.to_browser(encode_utf16("portal", kind, json.dumps(values)))

    async def audit(self, action: str, outcome: str, detail: dict[str, Any]) -> None:
        """One audit event about this session (input queued before it is not kept waiting)."""
        self.relay.flush_input()
        await in_thread(record)(action, outcome=outcome, actor=self.user.get_username(),
                                resource=self.stream.resource.slug, client_address=self.client_address,
                                detail={"session": str(self.stream.pk), **detail})

    async def record_end(self, reason: EndReason, message: str, *, by: str, guacd: Any) -> None:
        """Close the session's (or the watch's) row, once, and audit who ended it and why."""
        to_browser, from_browser = (guacd.bytes_in, guacd.bytes_out) if guacd else (0, 0)
        if isinstance(self.gate, WatcherGate):
            refused = self.gate.refused_input
            await in_thread(broker.end_watch)(self.watch.pk, message, ended_by=by,
                                              bytes_to_browser=to_browser, refused_input=refused)
        else:
            await in_thread(broker.end_session)(self.stream.pk, reason, message, ended_by=by,
                                                bytes_to_browser=to_browser, bytes_from_browser=from_browser)
