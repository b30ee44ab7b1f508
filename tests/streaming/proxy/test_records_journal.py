"""The access-record journal: private on disk, replayed exactly once after a crash."""

from __future__ import annotations

import stat
import time

import pytest

from streaming.proxy.models import AccessRecord
from streaming.proxy.records import AccessEntry, AccessLog, _insert, encode_entries

pytestmark = pytest.mark.django_db(transaction=True)


def _entries(prefix: str, count: int) -> list[AccessEntry]:
    return [AccessEntry("wendy", "echo", "GET", f"/{prefix}/{i}", 200, "allow", 0, 10, 1.0)
            for i in range(count)]


def test_a_crash_between_commit_and_truncation_writes_no_record_twice(tmp_path):
    # What a process killed right after a commit leaves: a journal whose first rows the
    # database already holds, and a last line torn mid-write.
    committed, uncommitted = _entries("crash", 300), _entries("crash-late", 200)
    _insert(AccessRecord, committed)
    leftover = tmp_path / "4242-deadbeef.jsonl"
    leftover.write_bytes(encode_entries(committed + uncommitted) + b'["wendy","echo","GE')
    log = AccessLog(directory=tmp_path)
    log.start()
    log.flush()
    log.close()
    paths = list(AccessRecord.objects.filter(path__startswith="/crash").values_list("path", flat=True))
    assert len(paths) == 500 and len(set(paths)) == 500
    assert not leftover.exists()


def test_the_journal_of_a_living_process_is_not_replayed_by_another(tmp_path):
    owner = AccessLog(batch_size=1000, interval=3600, directory=tmp_path)
    for entry in _entries("alive", 10):
        owner.add(entry)
    with owner._write_lock:  # its database writer held: the rows stay in its journal only
        owner._append_queue()
        other = AccessLog(directory=tmp_path)
        other.start()
        other.flush()
        assert not AccessRecord.objects.filter(path__startswith="/alive/").exists()
        other.close()
    owner.close()
    assert AccessRecord.objects.filter(path__startswith="/alive/").count() == 10


def test_the_journal_is_readable_by_the_portal_only(tmp_path):
    directory = tmp_path / "journals"
    log = AccessLog(batch_size=1000, interval=3600, directory=directory)
    log.add(_entries("private", 1)[0])
    (journal,) = directory.glob("*.jsonl")
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    log.close()


def test_records_reach_the_journal_within_half_a_second_whatever_the_database_writer_is_doing(tmp_path):
    log = AccessLog(directory=tmp_path)
    with log._write_lock:  # the database writer is held (as by a slow COPY) for this whole block
        for entry in _entries("quick", 20):
            log.add(entry)
        time.sleep(0.5)
        (journal,) = tmp_path.glob("*.jsonl")
        assert journal.read_bytes().count(b"/quick/") == 20
        assert log.pending() == 0
    log.close()
    assert AccessRecord.objects.filter(path__startswith="/quick/").count() == 20
    assert not list(tmp_path.glob("*.jsonl")), "a journal fully written is removed at shutdown"
