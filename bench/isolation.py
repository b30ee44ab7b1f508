"""Isolated sessions: how fast a slot shows its first frame, what a slot costs, how many fit.

    sudo .venv/bin/python bench/isolation.py [--browsers 10] [--rounds 3]

Runs the real pieces on this machine: a session host (bubblewrap slots with Xvfb, x11vnc and,
for web apps, Debian's Chromium as a kiosk), guacd 1.3, the portal (uvicorn, in a thread of
this process so the one-time codes it issues are in the same cache) and a small web app. It
prints, each a median over ``--rounds``:

- decision -> first frame, warm slot: from taking a ready slot to guacd's first drawn frame,
  for a per-session desktop (a terminal) and for an isolated browser (and when the browser's
  first request for the app's page reached the app);
- decision -> first frame, cold slot: the same when no slot was warm (the slot is made first);
- memory (PSS) of one isolated browser slot and of one plain desktop slot;
- how many isolated browsers run at once while the portal's /healthz p99 stays < 100 ms
  (the slots show the app's page; each step opens more);
- slot wipe time (every process gone, every file removed).

Targets (issue 13): warm <= 1.5 s, cold <= 5 s, >= 10 concurrent isolated browsers on 2 cores.
Root is needed (each slot drops to a user id of its own). Uses a scratch SQLite database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
_SCRATCH = Path(tempfile.mkdtemp(prefix="bench-isolation-"))
os.environ.setdefault("DATABASE_URL", f"sqlite:///{_SCRATCH / 'bench.sqlite3'}")
os.environ.setdefault("PORTAL_APPS_DOMAIN", "apps.localhost")


def _pss_mb(uid: int) -> float:
    """Proportional set size of every process of ``uid`` (shared pages counted once overall)."""
    from streaming.isolation.host import processes_of

    total = 0
    for pid in processes_of(uid):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                total += sum(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))
        except OSError:
            continue
    return total / 1024


async def _first_frame(guacd_port: int, lease) -> float:
    """Seconds from the handshake's start to guacd's first drawn frame (a ``sync`` after image data)."""
    from streaming.desktop.guacamole.guacd import Screen, open_guacd
    from streaming.desktop.parameters import connection_parameters
    from streaming.desktop.vault import TargetSecret

    params = connection_parameters("vnc", f"{lease.address}:{lease.port}", {},
                                   TargetSecret(password=lease.password), session_id="bench",
                                   recordings_dir=_SCRATCH)
    started = time.monotonic()
    conn = await open_guacd("127.0.0.1", guacd_port, protocol="vnc", parameters=params,
                            screen=Screen(width=1280, height=800), tls=None)
    drawn = False
    try:
        while True:
            text = await asyncio.wait_for(conn.read_frames(), 20)
            if text is None:
                raise RuntimeError("guacd closed before the first frame")
            drawn = drawn or ".img," in text or ".png," in text
            if drawn and ".sync," in text:
                return time.monotonic() - started
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--browsers", type=int, default=10, help="isolated browsers at the end of the ramp")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prewarm", action=argparse.BooleanOptionalAction, default=True,
                        help="warm slots already run the kiosk browser (the session host's default)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: every slot drops to a user id of its own")

    import django

    django.setup()
    import httpx
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.conf import settings

    from bench.proxy import _bench_session
    from demo.targets import start_guacd
    from streaming.isolation import pool
    from streaming.isolation.host import SessionHostRunner
    from streaming.isolation.launches import slot_launch
    from streaming.isolation.models import Slot
    from tests.upstreams.launch import portal_in_thread, run_echo
    from tiers.models import Resource, Tier

    slots = args.browsers + 2
    guacd = start_guacd(_SCRATCH / "guacd")
    results: dict[str, list[float]] = {}
    with run_echo() as app, portal_in_thread(_SCRATCH / "tls") as portal:
        port = int(portal.rsplit(":", 1)[1])
        settings.PORTAL_URL = portal
        session_key = _bench_session("bench-web", f"{app.url}isolated/")
        tier = Tier.objects.create(name="bench-stream", access_mode="stream")
        Resource.objects.filter(slug="bench-web").update(tier=tier)
        board = Resource.objects.get(slug="bench-web")
        board.allowed_groups.set([Group.objects.get(name="employee")])
        user = get_user_model().objects.get(username="bench")
        name = f"bench-{secrets.token_hex(2)}"
        slots_dir = Path("/run/zt-portal-bench") / name
        slots_dir.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(slots_dir.parent, 0o711)
        runner = SessionHostRunner(name, slots, slots_dir=slots_dir, uid_base=64000, poll_seconds=0.02,
                                   images=settings.PORTAL_SESSION_IMAGES, prewarm_browser=args.prewarm)
        stop = threading.Event()
        thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
        thread.start()

        def ready(n: int) -> None:
            deadline = time.monotonic() + 120
            while Slot.objects.filter(host__name=name, state=Slot.State.READY).count() < n:
                if time.monotonic() > deadline:
                    raise SystemExit("the session host did not warm its slots")
                time.sleep(0.05)

        def app_requests() -> int:
            return len(httpx.get(f"{app.url}log").json())

        def browser_launch():
            return slot_launch(board, user_id=user.pk, portal_session_key=session_key,
                               host_header=f"localhost:{port}", server=("127.0.0.1", port))

        try:
            ready(slots)
            for round_ in range(args.rounds):
                lease = pool.acquire(f"term-{round_}", {"kind": "image", "image": "terminal"})
                results.setdefault("warm desktop: decision -> first frame (s)", []).append(
                    asyncio.run(_first_frame(guacd.port, lease)))
                slot = Slot.objects.get(pk=lease.slot_id)
                time.sleep(1.0)
                results.setdefault("memory: plain desktop slot (MiB PSS)", []).append(
                    _pss_mb(runner.uid_base + slot.index))
                pool.release(f"term-{round_}")

                seen = app_requests()
                started = time.monotonic()
                lease = pool.acquire(f"web-{round_}", browser_launch())
                results.setdefault("warm browser: decision -> first frame (s)", []).append(
                    asyncio.run(_first_frame(guacd.port, lease)))
                while app_requests() == seen:
                    time.sleep(0.01)
                results.setdefault("warm browser: decision -> app page requested (s)", []).append(
                    time.monotonic() - started)
                time.sleep(3.0)
                slot = Slot.objects.get(pk=lease.slot_id)
                results.setdefault("memory: isolated browser slot (MiB PSS)", []).append(
                    _pss_mb(runner.uid_base + slot.index))
                pool.release(f"web-{round_}")
                ready(slots)

            # Cold: no slot warm; the slot is made for the session, then its first frame.
            for round_ in range(args.rounds):
                before = len(runner.warm_seconds)
                lease = pool.acquire(f"cold-{round_}", {"kind": "image", "image": "terminal"})
                pool.release(f"cold-{round_}")
                ready(slots)
                made = runner.warm_seconds[before]
                lease = pool.acquire(f"cold-{round_}b", {"kind": "image", "image": "terminal"})
                first = asyncio.run(_first_frame(guacd.port, lease))
                pool.release(f"cold-{round_}b")
                results.setdefault("cold desktop: slot made + first frame (s)", []).append(made + first)
                ready(slots)
            results["slot wipe (s)"] = list(runner.wipe_seconds)

            # Ramp: isolated browsers showing the app while /healthz answers.
            ramp: list[tuple[int, float]] = []
            open_sessions = 0
            with httpx.Client(verify=False) as client:
                for target in sorted({2, 4, 6, 8, args.browsers}):
                    while open_sessions < target:
                        pool.acquire(f"ramp-{open_sessions}", browser_launch())
                        open_sessions += 1
                    time.sleep(6.0)  # the kiosks start and render
                    times = []
                    for _ in range(200):
                        t0 = time.perf_counter()
                        client.get(f"{portal}/healthz")
                        times.append((time.perf_counter() - t0) * 1000)
                        time.sleep(0.01)
                    times.sort()
                    ramp.append((target, times[int(len(times) * 0.99) - 1]))
        finally:
            stop.set()
            thread.join(timeout=60)
            guacd.stop()
            shutil.rmtree(slots_dir, ignore_errors=True)

    print(f"isolation bench: rounds={args.rounds} cores={os.cpu_count()} slots={slots} "
          f"prewarm_browser={args.prewarm} (medians)")
    for label, values in results.items():
        print(f"  {label:52} {statistics.median(values):8.2f}   (n={len(values)}, max {max(values):.2f})")
    print("  isolated browsers open -> /healthz p99 (ms):")
    for count, p99 in ramp:
        print(f"    {count:3d} browsers: {p99:7.1f} ms {'(< 100 ms)' if p99 < 100 else '(OVER 100 ms)'}")
    held = max((c for c, p in ramp if p < 100), default=0)
    print(f"  held with /healthz p99 < 100 ms: {held} isolated browsers (target >= 10)")


if __name__ == "__main__":
    main()
