"""Durable on-disk FIFO of outgoing MQTT messages: appended before publishing, removed after PUBACK.

Layout of the buffer directory::

    0000000000000000.seg   segment: 8-byte file magic, then records
    0000000000000400.seg   (file name = hex seq of its first record; segments are read in name order)
    cursor                 ack cursor: every record with seq < cursor is acknowledged or dropped

Record: ``<I body_len><I crc32><Q seq>`` then the body ``<H topic_len> topic payload``. The CRC covers
seq and body, so a torn write (power cut, SIGKILL mid-write) or a flipped bit is detected: a bad record
at the end of the newest segment is truncated away on open, one in an older segment ends that segment
(counted in ``corrupt_records``); neither ever blocks the records after it.

Guarantees: a record whose ``append`` returned is on disk (fsync'd when ``fsync`` is on) and is handed
out by ``read_next`` until ``ack`` covers it, across process restarts; records come out in append order.
When the byte budget (or the disk) is full, whole oldest segments are dropped and counted in
``dropped_records``. A plain domain object: no MQTT, no threads of its own, thread-safe.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
import zlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from device_agent.sections import Section, SectionError, bounded

log = logging.getLogger(__name__)

SEGMENT_MAGIC: Final = b"TFBUF\x01\r\n"  # \r\n catches text-mode mangling, like PNG's signature
SEGMENT_SUFFIX: Final = ".seg"
CURSOR_NAME: Final = "cursor"
CURSOR_MAGIC: Final = b"TFCUR\x01\r\n"
_REC_HEAD: Final = struct.Struct("<IIQ")  # body_len, crc32(seq + body), seq
_TOPIC_LEN: Final = struct.Struct("<H")
_CURSOR_BODY: Final = struct.Struct("<QQQQ")  # cursor, dropped, corrupt, torn
_CURSOR_CRC: Final = struct.Struct("<I")
MAX_TOPIC_BYTES: Final = 1024


class BufferError_(RuntimeError):
    """Base of the buffer's own errors (the trailing underscore avoids shadowing the builtin)."""


class BufferDirectoryError(BufferError_):
    """The buffer directory cannot be used (not a directory, not writable)."""


class RecordTooLarge(BufferError_, ValueError):
    """A single message larger than a segment can never be buffered."""


@dataclass(frozen=True, kw_only=True)
class BufferSettings(Section):
    """Byte budget and durability of the buffer. ``max_bytes`` bounds the segment files together.

    A validated dataclass (device_agent.sections), not a pydantic model: the running agent cannot afford
    pydantic's ~15 MB. Bad values raise :class:`~device_agent.sections.SectionError` naming the field.
    """

    max_bytes: int = bounded(8 * 1024 * 1024, ge=4096)
    segment_bytes: int = bounded(256 * 1024, ge=1024)
    fsync: bool = True  # fsync every append and cursor write (power-loss safe); off = crash-safe only

    def _validate(self) -> None:
        # Dropping works a segment at a time; at least two must fit or the budget cannot be kept.
        if self.segment_bytes * 2 > self.max_bytes:
            raise SectionError(
                ("segment_bytes",),
                f"segment_bytes ({self.segment_bytes}) must be at most half of max_bytes ({self.max_bytes})",
            )


@dataclass(frozen=True, slots=True)
class BufferRecord:
    seq: int
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class BufferStats:
    pending: int  # records not yet acknowledged (approximate across corrupt regions)
    in_flight: int  # handed out by read_next, not yet acked
    bytes_on_disk: int
    segments: int
    next_seq: int
    cursor: int
    appended: int  # this process
    acked: int  # this process
    dropped_records: int  # total, persisted: oldest records dropped for budget or disk space
    corrupt_records: int  # total, persisted: bad records found in older segments (rest of segment skipped)
    torn_records: int  # total, persisted: torn tails truncated from the newest segment on open
    append_failures: int  # this process: appends that could not be stored even after dropping
    cursor_resets: int  # this process: unreadable cursor file, replay restarted from the oldest record


@dataclass(slots=True)
class _Segment:
    first_seq: int
    path: Path
    size: int  # bytes, header included
    last_seq: int  # -1 when empty

    @property
    def empty(self) -> bool:
        return self.last_seq < self.first_seq


@dataclass(slots=True)
class _Reader:
    seg_index: int = 0  # index into DiskBuffer._segments
    offset: int = len(SEGMENT_MAGIC)
    next_seq: int = 0  # seq position: every record before it was handed out (or skipped)


@dataclass(slots=True)
class _Counters:
    appended: int = 0
    acked: int = 0
    dropped: int = 0
    corrupt: int = 0
    torn: int = 0
    append_failures: int = 0
    cursor_resets: int = 0
    handed: deque[int] = field(default_factory=deque)
    acked_seqs: set[int] = field(default_factory=set)


def _crc(seq: int, body: bytes) -> int:
    return zlib.crc32(body, zlib.crc32(seq.to_bytes(8, "little")))


def encode_record(seq: int, topic: str, payload: bytes) -> bytes:
    topic_b = topic.encode()
    if len(topic_b) > MAX_TOPIC_BYTES:
        raise RecordTooLarge(f"topic is {len(topic_b)} bytes, at most {MAX_TOPIC_BYTES} allowed")
    body = _TOPIC_LEN.pack(len(topic_b)) + topic_b + bytes(payload)
    return _REC_HEAD.pack(len(body), _crc(seq, body), seq) + body


def _parse_body(body: bytes) -> tuple[str, bytes] | None:
    if len(body) < _TOPIC_LEN.size:
        return None
    (tlen,) = _TOPIC_LEN.unpack_from(body)
    if _TOPIC_LEN.size + tlen > len(body):
        return None
    try:
        topic = body[_TOPIC_LEN.size : _TOPIC_LEN.size + tlen].decode()
    except UnicodeDecodeError:
        return None
    return topic, body[_TOPIC_LEN.size + tlen :]


def _read_record(data: bytes | memoryview, offset: int) -> tuple[BufferRecord, int] | None:
    """The record at ``offset`` and the offset after it, or None if it is torn or corrupt."""
    if offset + _REC_HEAD.size > len(data):
        return None
    body_len, crc, seq = _REC_HEAD.unpack_from(data, offset)
    end = offset + _REC_HEAD.size + body_len
    if end > len(data):
        return None
    body = bytes(data[offset + _REC_HEAD.size : end])
    if _crc(seq, body) != crc:
        return None
    parsed = _parse_body(body)
    if parsed is None:
        return None
    return BufferRecord(seq, parsed[0], parsed[1]), end


class DiskBuffer:
    """Append-only segmented queue with a persisted ack cursor. See the module docstring."""

    def __init__(self, directory: str | os.PathLike[str], settings: BufferSettings | None = None) -> None:
        self.directory = Path(directory)
        self.settings = settings or BufferSettings()
        self._lock = threading.RLock()
        self._c = _Counters()
        self._segments: list[_Segment] = []
        self._fd: int | None = None  # append fd of the newest segment
        self._read_fd: int | None = None  # read fd of the segment being replayed
        self._read_path: Path | None = None
        self._cursor = 0
        self._next_seq = 0
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise BufferDirectoryError(
                f"buffer directory {self.directory} is not a directory: {exc}"
            ) from None
        if not self.directory.is_dir():
            raise BufferDirectoryError(f"buffer directory {self.directory} is not a directory")
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise BufferDirectoryError(f"buffer directory {self.directory} is not writable")
        self._reader = _Reader()
        self._load_cursor()
        self._recover_segments()
        self._rewind_locked()

    # ------------------------------------------------------------------ recovery

    def _load_cursor(self) -> None:
        path = self.directory / CURSOR_NAME
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        expected = len(CURSOR_MAGIC) + _CURSOR_BODY.size + _CURSOR_CRC.size
        body = data[len(CURSOR_MAGIC) : len(CURSOR_MAGIC) + _CURSOR_BODY.size]
        ok = (
            len(data) == expected
            and data.startswith(CURSOR_MAGIC)
            and _CURSOR_CRC.unpack_from(data, len(CURSOR_MAGIC) + _CURSOR_BODY.size)[0] == zlib.crc32(body)
        )
        if not ok:
            # Replaying from the oldest segment duplicates acked records but loses none.
            log.error("buffer cursor %s is unreadable (%d bytes); replaying from the oldest record",
                      path, len(data))
            self._c.cursor_resets += 1
            return
        self._cursor, self._c.dropped, self._c.corrupt, self._c.torn = _CURSOR_BODY.unpack(body)

    def _recover_segments(self) -> None:
        damage_before = (self._c.torn, self._c.corrupt)
        paths = sorted(p for p in self.directory.iterdir() if p.suffix == SEGMENT_SUFFIX)
        for i, path in enumerate(paths):
            newest = i == len(paths) - 1
            try:
                first_seq = int(path.stem, 16)
                data = path.read_bytes()
            except (ValueError, OSError) as exc:
                log.error("buffer segment %s skipped: %s", path.name, exc)
                self._set_aside(path)
                continue
            if not data.startswith(SEGMENT_MAGIC):
                if newest and len(data) < len(SEGMENT_MAGIC) and SEGMENT_MAGIC.startswith(data):
                    path.unlink()  # created but header never completed: nothing was in it
                    continue
                log.error("buffer segment %s has no segment header; set aside", path.name)
                self._set_aside(path)
                continue
            seg = _Segment(first_seq, path, len(SEGMENT_MAGIC), first_seq - 1)
            offset = len(SEGMENT_MAGIC)
            while offset < len(data):
                got = _read_record(data, offset)
                if got is None or got[0].seq <= seg.last_seq or got[0].seq < first_seq:
                    break
                seg.last_seq, offset = got[0].seq, got[1]
            seg.size = offset
            if offset < len(data):
                if newest:
                    log.warning(
                        "buffer segment %s: torn record at byte %d (%d bytes) truncated",
                        path.name, offset, len(data) - offset,
                    )
                    with open(path, "r+b") as f:
                        f.truncate(offset)
                    self._c.torn += 1
                else:
                    log.error(
                        "buffer segment %s: corrupt record at byte %d; the rest of this segment is skipped",
                        path.name, offset,
                    )
                    self._c.corrupt += 1
            if seg.empty:
                # Nothing valid inside (crash right after creating it, or damaged from the first record):
                # keep no empty segment around, its name would be reused by the next append.
                if offset < len(data) and not newest:
                    self._set_aside(path)
                else:
                    path.unlink()
                continue
            if self._segments and seg.first_seq <= self._segments[-1].last_seq:
                log.error("buffer segment %s overlaps its predecessor; set aside", path.name)
                self._set_aside(path)
                continue
            self._segments.append(seg)
        last = max((s.last_seq for s in self._segments), default=-1)
        self._next_seq = max(self._cursor, last + 1, *(s.first_seq for s in self._segments))
        if (self._c.torn, self._c.corrupt) != damage_before:
            self._write_cursor()  # persist the damage counters now, not at the next ack
        # Fully acknowledged old segments (crash between cursor write and unlink) go now.
        self._drop_acked_segments()

    def _set_aside(self, path: Path) -> None:
        try:
            path.rename(path.with_suffix(".corrupt"))
        except OSError as exc:
            log.error("could not set aside %s: %s", path, exc)

    # ------------------------------------------------------------------ writing

    def append(self, topic: str, payload: bytes) -> int | None:
        """Store one message durably; return its seq, or None if even dropping could not make room."""
        with self._lock:
            seq = self._next_seq
            rec = encode_record(seq, topic, payload)
            if len(rec) + len(SEGMENT_MAGIC) > self.settings.segment_bytes:
                raise RecordTooLarge(
                    f"message of {len(payload)} bytes does not fit a "
                    f"{self.settings.segment_bytes}-byte segment"
                )
            self._make_room(len(rec))
            for attempt in range(len(self._segments) + 2):
                try:
                    self._write(rec)
                except OSError as exc:
                    # Disk full (or file size limit): drop the oldest data and start a fresh segment.
                    log.error("buffer append failed (%s); dropping oldest segment (attempt %d)",
                              exc, attempt + 1)
                    self._seal()
                    if not self._drop_oldest(reason=f"disk: {errno.errorcode.get(exc.errno or 0, exc)}"):
                        break
                    continue
                self._next_seq = seq + 1
                self._c.appended += 1
                return seq
            self._c.append_failures += 1
            log.error("buffer append failed for good; message on %s lost (append_failures=%d)",
                      topic, self._c.append_failures)
            return None

    def _bytes_on_disk(self) -> int:
        return sum(s.size for s in self._segments)

    def _make_room(self, rec_len: int) -> None:
        while self._bytes_on_disk() + rec_len + len(SEGMENT_MAGIC) > self.settings.max_bytes:
            if len(self._segments) == 1:
                self._seal()  # the only segment is about to go; the next write opens a new one
            if not self._drop_oldest(reason="byte budget"):
                return

    def _write(self, rec: bytes) -> None:
        active = self._segments[-1] if self._segments else None
        if active is None or self._fd is None or active.size + len(rec) > self.settings.segment_bytes:
            self._seal()
            active = self._open_segment(self._next_seq)
        assert self._fd is not None
        try:
            written = os.write(self._fd, rec)
            if written != len(rec):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(rec)} bytes)")
            if self.settings.fsync:
                os.fsync(self._fd)
        except OSError:
            # Leave no torn tail behind in a file we keep appending to.
            try:
                os.ftruncate(self._fd, active.size)
            except OSError as exc:
                log.error("could not truncate %s after a failed write: %s", active.path.name, exc)
            raise
        active.size += len(rec)
        active.last_seq = self._next_seq

    def _open_segment(self, first_seq: int) -> _Segment:
        path = self.directory / f"{first_seq:016x}{SEGMENT_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        try:
            os.write(fd, SEGMENT_MAGIC)
            if self.settings.fsync:
                os.fsync(fd)
                self._fsync_dir()
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._fd = fd
        seg = _Segment(first_seq, path, len(SEGMENT_MAGIC), first_seq - 1)
        self._segments.append(seg)
        return seg

    def _seal(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._segments and self._segments[-1].empty:
            # An empty newest segment is worthless; remove it so names stay unique.
            seg = self._segments.pop()
            seg.path.unlink(missing_ok=True)

    def _fsync_dir(self) -> None:
        dfd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    # ------------------------------------------------------------------ dropping

    def _drop_oldest(self, reason: str) -> bool:
        """Delete the oldest segment, counting its unacknowledged records. False if none is left."""
        if len(self._segments) == 1:
            self._seal()  # the only segment is the one being appended to: close it first
        if not self._segments:
            return False
        seg = self._segments.pop(0)
        seg.path.unlink(missing_ok=True)
        lost = 0 if seg.empty else max(0, seg.last_seq - max(self._cursor, seg.first_seq) + 1)
        self._c.dropped += lost
        self._cursor = max(self._cursor, seg.last_seq + 1)
        c = self._c
        while c.handed and c.handed[0] < self._cursor:
            c.acked_seqs.discard(c.handed.popleft())
        self._reader_after_pop(seg)
        self._write_cursor()
        if lost:
            log.warning(
                "buffer full (%s): dropped %d oldest record(s) up to seq %d; dropped_records=%d",
                reason, lost, seg.last_seq, c.dropped,
            )
        return True

    def _reader_after_pop(self, seg: _Segment) -> None:
        """Segment 0 was removed: shift the reader's index, or restart it on the new first segment."""
        r = self._reader
        if self._read_path == seg.path:
            self._close_reader_fd()
        if r.seg_index == 0:
            r.offset = len(SEGMENT_MAGIC)
            r.next_seq = max(r.next_seq, seg.last_seq + 1)
        else:
            r.seg_index -= 1

    def _drop_acked_segments(self) -> None:
        # Keep the newest segment (it is appended to); delete older ones the cursor has passed.
        removed = False
        while len(self._segments) > 1 and self._segments[0].last_seq < self._cursor:
            seg = self._segments.pop(0)
            seg.path.unlink(missing_ok=True)
            removed = True
            self._reader_after_pop(seg)
        if removed and self.settings.fsync:
            self._fsync_dir()

    # ------------------------------------------------------------------ reading and acking

    def read_next(self, limit: int) -> list[BufferRecord]:
        """Up to ``limit`` records after the last one handed out, in order; they become in flight."""
        out: list[BufferRecord] = []
        with self._lock:
            r = self._reader
            while len(out) < limit and r.seg_index < len(self._segments):
                seg = self._segments[r.seg_index]
                if r.offset >= seg.size:
                    if r.seg_index == len(self._segments) - 1:
                        break  # caught up with the writer
                    r.seg_index += 1
                    r.offset = len(SEGMENT_MAGIC)
                    r.next_seq = max(r.next_seq, self._segments[r.seg_index].first_seq)
                    continue
                rec, end = self._pread_record(seg, r.offset)
                if rec is None:
                    log.error("buffer segment %s: corrupt record at byte %d; rest of the segment skipped",
                              seg.path.name, r.offset)
                    self._c.corrupt += 1
                    r.offset = seg.size
                    continue
                r.offset = end
                if rec.seq >= r.next_seq:  # records before the cursor were acked in an earlier life
                    out.append(rec)
                    self._c.handed.append(rec.seq)
                    r.next_seq = rec.seq + 1
        return out

    def _pread_record(self, seg: _Segment, offset: int) -> tuple[BufferRecord | None, int]:
        # One cached read-only fd per segment being replayed: two preads per record, no re-reading.
        if self._read_fd is None or self._read_path != seg.path:
            self._close_reader_fd()
            self._read_fd, self._read_path = os.open(seg.path, os.O_RDONLY), seg.path
        head = os.pread(self._read_fd, _REC_HEAD.size, offset)
        if len(head) < _REC_HEAD.size:
            return None, offset
        body_len = _REC_HEAD.unpack(head)[0]
        if offset + _REC_HEAD.size + body_len > seg.size:
            return None, offset
        got = _read_record(head + os.pread(self._read_fd, body_len, offset + _REC_HEAD.size), 0)
        if got is None:
            return None, offset
        return got[0], offset + got[1]

    def _close_reader_fd(self) -> None:
        if self._read_fd is not None:
            os.close(self._read_fd)
            self._read_fd, self._read_path = None, None

    def ack(self, seqs: Iterable[int]) -> None:
        """Mark handed-out records as delivered; persists the cursor once per call."""
        with self._lock:
            c = self._c
            new = False
            for seq in seqs:
                if seq >= self._cursor and seq not in c.acked_seqs and seq in c.handed:
                    c.acked_seqs.add(seq)
                    c.acked += 1
                    new = True
            if not new:
                return
            while c.handed and c.handed[0] in c.acked_seqs:
                c.acked_seqs.discard(c.handed.popleft())
            self._cursor = max(self._cursor, c.handed[0] if c.handed else self._reader.next_seq)
            self._write_cursor()
            self._drop_acked_segments()

    def rewind(self) -> None:
        """Forget what is in flight: the next ``read_next`` starts again at the oldest unacked record."""
        with self._lock:
            self._rewind_locked()

    def _rewind_locked(self) -> None:
        self._c.handed.clear()
        self._c.acked_seqs.clear()
        self._reader = _Reader(0, len(SEGMENT_MAGIC), self._cursor)
        # Skip segments entirely before the cursor (the newest one may be fully acked and kept).
        while (self._reader.seg_index < len(self._segments) - 1
               and self._segments[self._reader.seg_index].last_seq < self._cursor):
            self._reader.seg_index += 1

    def _write_cursor(self) -> None:
        c = self._c
        body = _CURSOR_BODY.pack(self._cursor, c.dropped, c.corrupt, c.torn)
        data = CURSOR_MAGIC + body + _CURSOR_CRC.pack(zlib.crc32(body))
        tmp = self.directory / (CURSOR_NAME + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, data)
                if self.settings.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.directory / CURSOR_NAME)
        except OSError as exc:
            # Not fatal: an old cursor only means acked records are replayed once more.
            log.error("could not persist buffer cursor: %s", exc)

    # ------------------------------------------------------------------ introspection

    def stats(self) -> BufferStats:
        with self._lock:
            c = self._c
            last = max((s.last_seq for s in self._segments), default=self._cursor - 1)
            return BufferStats(
                pending=max(0, last - self._cursor + 1),
                in_flight=len(c.handed),
                bytes_on_disk=self._bytes_on_disk(),
                segments=len(self._segments),
                next_seq=self._next_seq,
                cursor=self._cursor,
                appended=c.appended,
                acked=c.acked,
                dropped_records=c.dropped,
                corrupt_records=c.corrupt,
                torn_records=c.torn,
                append_failures=c.append_failures,
                cursor_resets=c.cursor_resets,
            )

    def has_unread(self) -> bool:
        with self._lock:
            r = self._reader
            if r.seg_index >= len(self._segments):
                return False
            return r.seg_index < len(self._segments) - 1 or r.offset < self._segments[r.seg_index].size

    def close(self) -> None:
        with self._lock:
            self._close_reader_fd()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> DiskBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
