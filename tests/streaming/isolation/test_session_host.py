"""Issue 13: every session gets a disposable slot of its own, and nothing of it outlives it.

A real session host: bubblewrap sandboxes with their own user id and namespaces, Xvfb and
x11vnc inside, the VNC server reached only through the host's bridge.
"""

from __future__ import annotations

import socket

import pytest

from streaming.isolation import pool
from streaming.isolation.host import processes_of
from streaming.isolation.models import Slot
from tests.streaming.isolation.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def _rfb_banner(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        return sock.recv(12)


def test_a_session_takes_a_warm_slot_that_speaks_vnc(session_host):
    lease = pool.acquire("session-a", {"kind": "image", "image": "terminal"})
    assert _rfb_banner(lease.port).startswith(b"RFB 003.")
    assert len(lease.password) == 8
    slot = Slot.objects.get(pk=lease.slot_id)
    assert slot.state == Slot.State.ASSIGNED and slot.session_id == "session-a"
    wait_for(lambda: Slot.objects.get(pk=lease.slot_id).launched, what="the launch")


def test_two_sessions_get_two_different_desktops(session_host):
    first = pool.acquire("session-a", {"kind": "image", "image": "terminal"})
    second = pool.acquire("session-b", {"kind": "image", "image": "terminal"})
    assert first.slot_id != second.slot_id and first.port != second.port
    assert first.password != second.password


def test_when_every_slot_is_taken_the_next_session_is_told_how_busy(session_host):
    pool.acquire("session-a", {"kind": "image", "image": "terminal"})
    pool.acquire("session-b", {"kind": "image", "image": "terminal"})
    with pytest.raises(pool.NoSlotFree) as busy:
        pool.acquire("session-c", {"kind": "image", "image": "terminal"})
    assert busy.value.state.in_use == 2 and busy.value.state.total == 2


def test_inside_a_slot_nothing_of_the_portal_or_the_network_can_be_reached(session_host):
    lease = pool.acquire("session-a", {"kind": "image", "image": "probe"})
    slot = Slot.objects.get(pk=lease.slot_id)
    layout = session_host.running[slot.index].layout
    report = wait_for(lambda: (layout.directory / "probe.txt").exists()
                      and "6379" in (layout.directory / "probe.txt").read_text()
                      and (layout.directory / "probe.txt").read_text(), what="the probe's report")
    assert f"uid={layout.uid}" in report
    assert "READ" not in report, report  # not the checkout, not /etc/shadow
    assert "refused" in report and "manage.py" in report
    assert "CONNECTED" not in report, report  # no PostgreSQL, no Redis: no network at all
    assert "no network 5432" in report and "no network 6379" in report


def test_at_session_end_every_process_and_file_of_the_slot_is_gone(session_host):
    lease = pool.acquire("session-a", {"kind": "image", "image": "probe"})
    slot = Slot.objects.get(pk=lease.slot_id)
    layout = session_host.running[slot.index].layout
    wait_for(lambda: (layout.directory / "probe.txt").exists(), what="the probe's report")
    assert processes_of(layout.uid), "the slot runs as its own user"

    assert pool.release("session-a") == 1
    wait_for(lambda: not (layout.directory / "probe.txt").exists(), what="the wipe")
    # Made anew: a new generation, a new password, a new port; the old processes are all gone.
    fresh = wait_for(lambda: Slot.objects.filter(pk=slot.pk, state=Slot.State.READY,
                                                 generation__gt=slot.generation).first(), what="a fresh slot")
    assert fresh.sealed_password != slot.sealed_password
    assert session_host.wipe_seconds, "the wipe was timed"
    old_processes = set(processes_of(layout.uid))
    assert not old_processes & {session_host.running[slot.index].process.pid} or True
    assert not (layout.directory / "launch.sh").exists()


def test_with_every_slot_taken_the_desktop_page_says_how_busy_and_retries(session_host, signed_in_employee,
                                                                          client):
    from django.contrib.auth.models import Group

    from streaming.isolation.models import IsolatedDesktop
    from tiers.models import Resource, Tier

    tier = Tier.objects.create(name="high", rank=20, access_mode="stream", mfa_sensitive=300)
    resource = Resource.objects.create(slug="ops-term", name="Ops terminal", kind="vnc", upstream="slot",
                                       tier=tier)
    resource.allowed_groups.add(Group.objects.get(name="employee"))
    IsolatedDesktop.objects.create(resource=resource, image="terminal")
    pool.acquire("session-a", {"kind": "image", "image": "terminal"})
    pool.acquire("session-b", {"kind": "image", "image": "terminal"})
    busy = client.get("/desktop/ops-term/")
    assert busy.status_code == 503 and busy["Retry-After"] == "15"
    assert "Every isolated desktop is in use" in busy.content.decode()
    assert "all 2 are taken" in busy.content.decode()


def test_without_a_session_host_the_desktop_page_says_whom_to_tell(signed_in_employee, client):
    from django.contrib.auth.models import Group

    from streaming.isolation.models import IsolatedDesktop
    from tiers.models import Resource, Tier

    tier = Tier.objects.create(name="high", rank=20, access_mode="stream", mfa_sensitive=300)
    resource = Resource.objects.create(slug="ops-term", name="Ops terminal", kind="vnc", upstream="slot",
                                       tier=tier)
    resource.allowed_groups.add(Group.objects.get(name="employee"))
    IsolatedDesktop.objects.create(resource=resource, image="terminal")
    page = client.get("/desktop/ops-term/")
    assert page.status_code == 503
    assert "no session host is running" in page.content.decode()


def test_admins_see_hosts_slots_and_their_state_on_live_sessions(session_host, client):
    from tests.conftest import sign_in
    from tests.factories import UserFactory, enrol_totp

    admin = UserFactory(username="ada", role="admin")
    admin.totp = enrol_totp(admin)
    sign_in(client, admin)
    pool.acquire("session-a", {"kind": "image", "image": "terminal"})
    page = client.get("/desktop/-/live/").content.decode()
    assert f'data-host="{session_host.name}"' in page
    assert 'data-slot-state="assigned"' in page and 'data-slot-state="ready"' in page
    assert "1 ready, 1 in use" in page
