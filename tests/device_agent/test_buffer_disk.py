"""DiskBuffer as a plain domain object: order, durability across reopen, torn/corrupt records, budget."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_agent.disk_buffer import (
    CURSOR_NAME,
    SEGMENT_SUFFIX,
    BufferDirectoryError,
    BufferSettings,
    DiskBuffer,
    RecordTooLarge,
)
from device_agent.sections import SectionError

FAST = BufferSettings(max_bytes=64 * 1024, segment_bytes=4096, fsync=False)


def payload(i: int, size: int = 40) -> bytes:
    return f"{i:08d}".encode().ljust(size, b".")


def drain(buf: DiskBuffer, batch: int = 7) -> list[int]:
    """Read everything, acking in batches; return the seqs' payload numbers in delivery order."""
    out: list[int] = []
    while True:
        recs = buf.read_next(batch)
        if not recs:
            return out
        out += [int(r.payload[:8]) for r in recs]
        buf.ack(r.seq for r in recs)


def segments(d: Path) -> list[Path]:
    return sorted(d.glob(f"*{SEGMENT_SUFFIX}"))


def test_records_come_out_in_order_and_acked_ones_never_again(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path, FAST)
    for i in range(300):  # spans several 4 KiB segments
        buf.append("tinyfleet/v1/d1/telemetry", payload(i))
    first = buf.read_next(50)
    assert [int(r.payload[:8]) for r in first] == list(range(50))
    assert all(r.topic == "tinyfleet/v1/d1/telemetry" for r in first)
    buf.ack([r.seq for r in first[:20]])
    buf.close()

    reopened = DiskBuffer(tmp_path, FAST)  # in-flight 20..49 were never acked: they come back
    assert drain(reopened) == list(range(20, 300))
    st_ = reopened.stats()
    assert (st_.pending, st_.in_flight, st_.dropped_records) == (0, 0, 0)
    assert len(segments(tmp_path)) == 1, "fully acked segments are deleted, only the newest stays"
    reopened.close()
    assert drain(DiskBuffer(tmp_path, FAST)) == []


def test_out_of_order_acks_move_the_cursor_only_over_a_contiguous_prefix(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path, FAST)
    for i in range(10):
        buf.append("t/a", payload(i))
    recs = buf.read_next(10)
    buf.ack([recs[5].seq, recs[6].seq, recs[9].seq])  # 0..4 still missing
    assert buf.stats().cursor == recs[0].seq
    buf.ack([r.seq for r in recs[:5]])
    assert buf.stats().cursor == recs[7].seq
    buf.close()
    assert drain(DiskBuffer(tmp_path, FAST)) == [7, 8, 9]  # 9 was acked, but replay from the cursor


def test_torn_last_record_is_truncated_and_later_appends_survive(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path, FAST)
    for i in range(5):
        buf.append("t/a", payload(i))
    buf.close()
    seg = segments(tmp_path)[-1]
    size = seg.stat().st_size
    with open(seg, "r+b") as f:  # crash in the middle of the 5th record's write
        f.truncate(size - 13)

    buf = DiskBuffer(tmp_path, FAST)
    assert buf.stats().torn_records == 1
    buf.append("t/a", payload(100))
    buf.close()
    buf = DiskBuffer(tmp_path, FAST)
    assert drain(buf) == [0, 1, 2, 3, 100]
    assert buf.stats().torn_records == 1, "the counter is persisted, and nothing new was torn"


def test_garbage_after_the_last_record_is_dropped(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path, FAST)
    for i in range(3):
        buf.append("t/a", payload(i))
    buf.close()
    with open(segments(tmp_path)[-1], "ab") as f:
        f.write(os.urandom(100))
    assert drain(DiskBuffer(tmp_path, FAST)) == [0, 1, 2]


def test_corrupt_record_in_an_older_segment_skips_only_that_segments_tail(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path, FAST)
    for i in range(200):
        buf.append("t/a", payload(i))
    buf.close()
    segs = segments(tmp_path)
    assert len(segs) >= 3
    data = bytearray(segs[0].read_bytes())
    rec_size = 16 + 2 + len("t/a") + 40  # header, topic length, topic, payload
    n_first = (len(data) - 8) // rec_size  # records in the first segment (8-byte segment magic)
    flip = 8 + rec_size * 10 + 20  # inside record 10's body
    data[flip] ^= 0xFF
    segs[0].write_bytes(bytes(data))

    buf = DiskBuffer(tmp_path, FAST)
    got = drain(buf)
    assert got == list(range(10)) + list(range(n_first, 200))
    assert buf.stats().corrupt_records == 1


def test_unreadable_cursor_replays_everything_rather_than_losing_anything(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path, FAST)
    for i in range(5):
        buf.append("t/a", payload(i))
    buf.ack(r.seq for r in buf.read_next(3))
    buf.close()
    (tmp_path / CURSOR_NAME).write_bytes(b"garbage")
    buf = DiskBuffer(tmp_path, FAST)
    assert buf.stats().cursor_resets == 1
    assert drain(buf) == [0, 1, 2, 3, 4]  # duplicates of 0..2, no loss


def test_byte_budget_drops_oldest_records_with_a_counter(tmp_path: Path) -> None:
    settings_ = BufferSettings(max_bytes=16 * 1024, segment_bytes=2048, fsync=False)
    buf = DiskBuffer(tmp_path, settings_)
    n = 2000
    for i in range(n):
        assert buf.append("t/a", payload(i)) is not None
    st_ = buf.stats()
    on_disk = sum(p.stat().st_size for p in segments(tmp_path))
    assert on_disk <= settings_.max_bytes and st_.bytes_on_disk == on_disk
    got = drain(buf)
    assert st_.dropped_records + len(got) == n, "every record is either delivered or counted as dropped"
    assert got == list(range(n - len(got), n)), "the newest survive, contiguous and in order"
    assert st_.dropped_records > 0
    buf.close()
    assert DiskBuffer(tmp_path, settings_).stats().dropped_records == st_.dropped_records  # persisted


def test_drop_while_records_are_in_flight_keeps_the_rest_consistent(tmp_path: Path) -> None:
    settings_ = BufferSettings(max_bytes=8192, segment_bytes=2048, fsync=False)
    buf = DiskBuffer(tmp_path, settings_)
    for i in range(30):
        buf.append("t/a", payload(i))
    in_flight = buf.read_next(10)  # handed to "MQTT", then the budget forces drops
    for i in range(30, 400):
        buf.append("t/a", payload(i))
    buf.ack(r.seq for r in in_flight)  # late PUBACKs for dropped records are harmless
    got = drain(buf)
    assert got == list(range(400 - len(got), 400))
    assert buf.stats().dropped_records + len(got) + 10 >= 400


def test_file_size_limit_on_write_drops_oldest_and_never_crashes(tmp_path: Path) -> None:
    """A real failing write (RLIMIT_FSIZE -> EFBIG, the same path as ENOSPC) in a child process."""
    script = textwrap.dedent(
        f"""
        import resource, signal, json
        from device_agent.disk_buffer import DiskBuffer, BufferSettings
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
        settings = BufferSettings(max_bytes=1 << 20, segment_bytes=8192, fsync=False)
        buf = DiskBuffer({str(tmp_path)!r}, settings)
        for i in range(100):
            buf.append("t/a", f"{{i:08d}}".encode().ljust(40, b"."))
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))  # segments may not grow past 3000 bytes
        stored = [buf.append("t/a", f"{{i:08d}}".encode().ljust(40, b".")) for i in range(100, 200)]
        got = []
        while recs := buf.read_next(10):
            got += [int(r.payload[:8]) for r in recs]
            buf.ack(r.seq for r in recs)
        s = buf.stats()
        print(json.dumps({{"got": got, "dropped": s.dropped_records, "failed": s.append_failures,
                          "stored": sum(x is not None for x in stored)}}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["dropped"] > 0, "the oldest records made room"
    assert out["got"] == sorted(out["got"]), "still in order"
    assert out["got"][-1] == 199, "the newest record is kept"
    assert out["dropped"] + len(out["got"]) + out["failed"] == 200
    assert "append failed" in proc.stderr


def test_bad_settings_and_directories_are_named(tmp_path: Path) -> None:
    with pytest.raises(SectionError, match="segment_bytes"):
        BufferSettings(max_bytes=8192, segment_bytes=8192)
    with pytest.raises(SectionError, match="max_bytes"):
        BufferSettings(max_bytes=10)
    with pytest.raises(TypeError, match="unexpected keyword argument 'budget'"):
        BufferSettings(max_bytes=8192, segment_bytes=2048, budget=3)  # type: ignore[call-arg]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(BufferDirectoryError, match="not a directory"):
        DiskBuffer(a_file, FAST)
    buf = DiskBuffer(tmp_path / "b", FAST)
    buf.append("t/a", payload(1))
    with pytest.raises(RecordTooLarge, match="does not fit"):
        buf.append("t/a", b"x" * 5000)
    with pytest.raises(RecordTooLarge, match="topic"):
        buf.append("t" * 2000, b"x")
    assert drain(buf) == [1], "a rejected append leaves what is stored intact"


def test_segment_without_header_is_set_aside_not_fatal(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path, FAST)
    for i in range(3):
        buf.append("t/a", payload(i))
    buf.close()
    (tmp_path / f"{'f' * 16}{SEGMENT_SUFFIX}").write_bytes(b"not a segment at all, but long enough")
    buf = DiskBuffer(tmp_path, FAST)
    assert drain(buf) == [0, 1, 2]
    assert list(tmp_path.glob("*.corrupt"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.one_of(st.tuples(st.just("append"), st.integers(1, 30)),
                              st.tuples(st.just("deliver"), st.integers(1, 40)),
                              st.tuples(st.just("reopen"), st.just(0))), max_size=25))
def test_model_based_no_loss_no_reorder(tmp_path_factory: pytest.TempPathFactory,
                                        ops: list[tuple[str, int]]) -> None:
    """Against a list model: whatever the interleaving of appends, partial deliveries and restarts,
    the records delivered (first occurrences) are exactly those appended, in order."""
    d = tmp_path_factory.mktemp("model")
    buf = DiskBuffer(d, FAST)
    appended: list[int] = []
    delivered: list[int] = []
    for op, n in ops:
        if op == "append":
            for _ in range(n):
                buf.append("t/a", payload(len(appended)))
                appended.append(len(appended))
        elif op == "deliver":
            recs = buf.read_next(n)
            delivered += [int(r.payload[:8]) for r in recs]
            buf.ack(r.seq for r in recs[: len(recs) // 2 + 1])  # some acks are "lost" with a restart
        else:
            buf.close()
            buf = DiskBuffer(d, FAST)
    buf.close()
    delivered += drain(DiskBuffer(d, FAST))
    firsts = list(dict.fromkeys(delivered))
    assert firsts == appended


def test_sigkill_during_appends_loses_nothing_that_was_acknowledged_as_stored(tmp_path: Path) -> None:
    """Kill a writer process mid-stream; every append it reported as done is still there, in order."""
    script = textwrap.dedent(
        f"""
        import sys
        from device_agent.disk_buffer import DiskBuffer, BufferSettings
        settings = BufferSettings(max_bytes=1 << 22, segment_bytes=4096, fsync=False)
        buf = DiskBuffer({str(tmp_path)!r}, settings)
        i = 0
        while True:
            buf.append("t/a", f"{{i:08d}}".encode().ljust(40, b"."))
            print(i, flush=True)
            i += 1
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    last = -1
    for line in proc.stdout:
        last = int(line)
        if last >= 2000:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    got = drain(DiskBuffer(tmp_path, FAST))
    assert got[: last + 1] == list(range(last + 1))
    assert got == list(range(len(got)))


@pytest.mark.parametrize("leftover", [b"TFBUF\x01\r\n", b"TFB", b""],
                         ids=["header only", "torn header", "empty"])
def test_crash_right_after_creating_a_segment_is_recovered(tmp_path: Path, leftover: bytes) -> None:
    buf = DiskBuffer(tmp_path, FAST)
    for i in range(3):
        buf.append("t/a", payload(i))
    next_seq = buf.stats().next_seq
    buf.close()
    (tmp_path / f"{next_seq:016x}{SEGMENT_SUFFIX}").write_bytes(leftover)
    buf = DiskBuffer(tmp_path, FAST)
    for i in range(3, 6):
        buf.append("t/a", payload(i))
    assert buf.stats().bytes_on_disk == sum(p.stat().st_size for p in segments(tmp_path))
    buf.close()
    assert drain(DiskBuffer(tmp_path, FAST)) == [0, 1, 2, 3, 4, 5]
