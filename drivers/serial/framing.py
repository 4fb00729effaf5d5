"""Frames on a serial byte stream: pure encoders and streaming decoders, no I/O.

Two formats field sensors commonly speak:

* ASCII sentences, NMEA 0183 style: ``$WL,1.234,m*5C\\r\\n``. The checksum is the XOR of
  every byte between ``$`` and ``*``, as two hex digits; fields are comma separated and the
  first names the sentence. ``$`` always starts a new sentence, so a cut-off line costs
  that line only.
* Length-prefixed binary frames::

      STX 0x02 | LEN (1 byte, payload length) | PAYLOAD | CRC16 lo | CRC16 hi | ETX 0x03

  CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF, low byte first: the same CRC as
  Modbus RTU) over LEN and PAYLOAD. A candidate that fails any check gives up only its
  STX byte: the decoder rescans from the next byte, so a real frame hiding behind a
  garbage STX is still found. The format has no byte stuffing, so a cut-off frame plus the
  head of the next one can itself pass (CRC and ETX both match about once in 16 million):
  the next frame is then lost and counted as noise. Devices that need better use a format
  with stuffing; this one is what the sensors speak.

Decoders take arbitrary chunks (a UART read returns whatever arrived), never raise on
input, and keep per-reason counts of what they rejected, so a noisy line shows up in the
gateway's counters instead of as silently missing readings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "BinaryDecoder",
    "BinaryFrame",
    "DecoderStats",
    "NmeaDecoder",
    "NmeaFrame",
    "crc16_modbus",
    "encode_binary",
    "encode_nmea",
    "nmea_checksum",
]


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16_modbus(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/MODBUS (check value for b"123456789" is 0x4B37); sent low byte first."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


@dataclass
class DecoderStats:
    """What a decoder made of its input; every byte fed ends up in exactly one bucket
    (frame_bytes, a rejected_bytes reason, or the decoder's pending bytes)."""

    frames: int = 0
    frame_bytes: int = 0
    rejected_frames: dict[str, int] = field(default_factory=dict)
    rejected_bytes: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str, n_bytes: int, frame: bool = True) -> None:
        if n_bytes <= 0:
            return
        if frame:
            self.rejected_frames[reason] = self.rejected_frames.get(reason, 0) + 1
        self.rejected_bytes[reason] = self.rejected_bytes.get(reason, 0) + n_bytes

    @property
    def total_rejected_bytes(self) -> int:
        return sum(self.rejected_bytes.values())


# --- ASCII sentences ---------------------------------------------------------------------

NMEA_MAX_LINE = 82  # NMEA 0183: at most 82 characters from '$' to '\n' inclusive
_SENTENCE_RE = re.compile(r"^[A-Z][A-Z0-9]{1,9}$")
_FIELD_FORBIDDEN = frozenset("$*,\r\n!")
_HEX = frozenset(b"0123456789ABCDEFabcdef")


@dataclass(frozen=True, slots=True)
class NmeaFrame:
    sentence: str  # "WL"
    fields: tuple[str, ...]  # ("1.234", "m")


def nmea_checksum(body: bytes) -> int:
    checksum = 0
    for byte in body:
        checksum ^= byte
    return checksum


def encode_nmea(sentence: str, fields: Sequence[str]) -> bytes:
    """``$SENTENCE,f1,f2*HH\\r\\n``; raises ValueError for what could not be decoded back."""
    if not _SENTENCE_RE.match(sentence):
        raise ValueError(f"sentence id {sentence!r} must be A-Z then 1-9 of A-Z0-9")
    for item in fields:
        if not item.isascii() or not item.isprintable() or _FIELD_FORBIDDEN & set(item):
            raise ValueError(f"field {item!r} must be printable ASCII without $ * , !")
    body = ",".join((sentence, *fields)).encode("ascii")
    return b"$%s*%02X\r\n" % (body, nmea_checksum(body))


class NmeaDecoder:
    """Streaming decoder for ``$...*HH`` lines; ``\\r`` before ``\\n`` is optional."""

    def __init__(self, max_line: int = NMEA_MAX_LINE) -> None:
        if max_line < 6:  # "$AB*HH" needs 6 and then a newline
            raise ValueError("max_line must be at least 6")
        self.max_line = max_line
        self.stats = DecoderStats()
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[NmeaFrame]:
        buffer = self._buffer
        buffer += data
        frames: list[NmeaFrame] = []
        while buffer:
            if buffer[0] != 0x24:  # '$'
                start = buffer.find(b"$")
                noise = len(buffer) if start < 0 else start
                self.stats.reject("noise", noise, frame=False)
                del buffer[:noise]
                continue
            newline = buffer.find(b"\n", 1)
            restart = buffer.find(b"$", 1)
            if restart >= 0 and (newline < 0 or restart < newline):
                # A new sentence began before this one ended: the line was cut.
                self.stats.reject("truncated", restart)
                del buffer[:restart]
                continue
            if newline < 0:
                if len(buffer) >= self.max_line:
                    self.stats.reject("too_long", len(buffer))
                    buffer.clear()
                break
            line = bytes(buffer[: newline + 1])
            del buffer[: newline + 1]
            if len(line) > self.max_line:
                self.stats.reject("too_long", len(line))
                continue
            frame, reason = _parse_line(line)
            if frame is None:
                self.stats.reject(reason, len(line))
                continue
            self.stats.frames += 1
            self.stats.frame_bytes += len(line)
            frames.append(frame)
        return frames


def _parse_line(line: bytes) -> tuple[NmeaFrame | None, str]:
    text = line[1:-1]  # between '$' and '\n'
    if text.endswith(b"\r"):
        text = text[:-1]
    star = text.rfind(b"*")
    if star < 0 or len(text) - star != 3 or not _HEX.issuperset(text[star + 1 :]):
        return None, "malformed"
    body = text[:star]
    if any(byte < 0x20 or byte > 0x7E or byte == 0x2A for byte in body):
        return None, "malformed"
    if nmea_checksum(body) != int(text[star + 1 :], 16):
        return None, "checksum"
    sentence, *fields = body.decode("ascii").split(",")
    if not _SENTENCE_RE.match(sentence):
        return None, "malformed"
    return NmeaFrame(sentence, tuple(fields)), ""


# --- binary frames -----------------------------------------------------------------------

STX = 0x02
ETX = 0x03
BINARY_OVERHEAD = 5  # STX, LEN, CRC lo, CRC hi, ETX
_OK, _BAD, _INCOMPLETE = 0, 1, 2


@dataclass(frozen=True, slots=True)
class BinaryFrame:
    payload: bytes


def encode_binary(payload: bytes) -> bytes:
    if len(payload) > 255:
        raise ValueError(f"payload of {len(payload)} bytes does not fit a 1-byte length")
    body = bytes((len(payload),)) + payload
    return bytes((STX,)) + body + crc16_modbus(body).to_bytes(2, "little") + bytes((ETX,))


class BinaryDecoder:
    """Streaming decoder for STX/LEN/PAYLOAD/CRC/ETX frames (see the module docstring)."""

    def __init__(self, max_payload: int = 255) -> None:
        if not 0 <= max_payload <= 255:
            raise ValueError("max_payload must be 0..255 (the length is one byte)")
        self.max_payload = max_payload
        self.stats = DecoderStats()
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[BinaryFrame]:
        buffer = self._buffer
        buffer += data
        frames: list[BinaryFrame] = []
        pos = 0
        while True:
            start = buffer.find(STX, pos)
            if start < 0:
                self.stats.reject("noise", len(buffer) - pos, frame=False)
                pos = len(buffer)
                break
            self.stats.reject("noise", start - pos, frame=False)
            pos = start
            status, size_or_reason = self._check(buffer, pos)
            if status == _OK:
                assert isinstance(size_or_reason, int)
                frames.append(BinaryFrame(bytes(buffer[pos + 2 : pos + size_or_reason - 3])))
                self.stats.frames += 1
                self.stats.frame_bytes += size_or_reason
                pos += size_or_reason
            elif status == _BAD:
                assert isinstance(size_or_reason, str)
                self.stats.reject(size_or_reason, 1)  # give up the STX only, rescan after it
                pos += 1
            else:
                # The head candidate still waits for bytes. If a complete, valid frame
                # already follows it, the head was garbage: frames do not overlap, and
                # waiting for its declared length would hold later frames back (their
                # read-time timestamps would be late by up to 260 characters).
                later = self._next_valid(buffer, pos + 1)
                if later is None:
                    break
                self.stats.reject("truncated", later - pos)
                pos = later
        del buffer[:pos]
        return frames

    def _check(self, buffer: bytearray, pos: int) -> tuple[int, int | str]:
        available = len(buffer) - pos
        if available < 2:
            return _INCOMPLETE, "short"
        length = buffer[pos + 1]
        if length > self.max_payload:
            return _BAD, "length"
        size = length + BINARY_OVERHEAD
        if available < size:
            return _INCOMPLETE, "short"
        if buffer[pos + size - 1] != ETX:
            return _BAD, "etx"
        crc = int.from_bytes(buffer[pos + size - 3 : pos + size - 1], "little")
        if crc != crc16_modbus(buffer[pos + 1 : pos + size - 3]):
            return _BAD, "crc"
        return _OK, size

    def _next_valid(self, buffer: bytearray, pos: int) -> int | None:
        while (start := buffer.find(STX, pos)) >= 0:
            if self._check(buffer, start)[0] == _OK:
                return start
            pos = start + 1
        return None
