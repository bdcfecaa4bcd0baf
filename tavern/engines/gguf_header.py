"""The bytes of a GGUF file's header: magic, version, metadata key/values, tensor-info table.

`read_header` walks the header of an open file without reading or mapping the tensor data, so it
is fast even on a 40 GB file; `gguf_info.read_gguf` turns what it finds into a `GGUFInfo`. Every
read is bounded by the file size, so a hostile length field cannot make us allocate gigabytes,
and every failure on a bad file is a `ModelLoadError` whose message is one line naming the file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeAlias

from tavern.errors import ModelLoadError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)

# Arrays longer than this are recorded as `SkippedArray` (type and length only): the tokenizer's
# tokens/merges/scores run to 100k+ entries and nobody in Tavern needs them from here.
MAX_KEPT_ARRAY = 4096
# A kept string (key, name, chat template) longer than this is corruption, not a template:
# real chat templates are tens of KB. Strings inside skipped arrays are seeked over instead.
MAX_KEPT_STRING = 16 * 1024 * 1024

# --- GGUF metadata value types (gguf-py GGUFValueType) -------------------------------------------
_T_UINT8, _T_INT8, _T_UINT16, _T_INT16, _T_UINT32, _T_INT32, _T_FLOAT32 = range(7)
_T_BOOL, _T_STRING, _T_ARRAY, _T_UINT64, _T_INT64, _T_FLOAT64 = range(7, 13)

_SCALAR_FORMATS: dict[int, str] = {
    _T_UINT8: "<B",
    _T_INT8: "<b",
    _T_UINT16: "<H",
    _T_INT16: "<h",
    _T_UINT32: "<I",
    _T_INT32: "<i",
    _T_FLOAT32: "<f",
    _T_BOOL: "<?",
    _T_UINT64: "<Q",
    _T_INT64: "<q",
    _T_FLOAT64: "<d",
}
_VALUE_TYPE_NAMES = {
    _T_UINT8: "uint8",
    _T_INT8: "int8",
    _T_UINT16: "uint16",
    _T_INT16: "int16",
    _T_UINT32: "uint32",
    _T_INT32: "int32",
    _T_FLOAT32: "float32",
    _T_BOOL: "bool",
    _T_STRING: "string",
    _T_ARRAY: "array",
    _T_UINT64: "uint64",
    _T_INT64: "int64",
    _T_FLOAT64: "float64",
}


@dataclass(frozen=True)
class SkippedArray:
    """A metadata array too long to keep (tokenizer tokens, merges, scores): type and length."""

    item_type: str
    length: int


Scalar: TypeAlias = int | float | bool
"""A fixed-size metadata value (`struct` gives these for every scalar format above)."""
MetadataValue: TypeAlias = "Scalar | str | SkippedArray | list[MetadataValue]"
"""One metadata value as read: a scalar, a string, a short array of them, or a skipped one."""
RawTensor: TypeAlias = tuple[str, tuple[int, ...], int, int]
"""One tensor-info entry as read: (name, shape, ggml type, offset in the data section)."""


@dataclass(frozen=True)
class Header:
    """What `read_header` found."""

    version: int
    metadata: dict[str, MetadataValue]
    tensors: list[RawTensor]
    end: int
    """The file offset where the header ends (the data section starts at the next alignment)."""


def read_header(p: Path, f: BinaryIO, file_size: int) -> Header:
    """The header of the GGUF file `f` (named `p` in errors) of `file_size` bytes."""
    r = HeaderReader(f, file_size)
    try:
        magic = f.read(4)
        r.base = 4
        if len(magic) < 4:
            raise ModelLoadError(f"{p}: not a GGUF file (too short)")
        if magic != GGUF_MAGIC:
            raise ModelLoadError(f"{p}: not a GGUF file (bad magic)")
        version = r.u32()
        if version not in SUPPORTED_VERSIONS and struct.unpack(">I", struct.pack("<I", version))[0] in (2, 3):
            raise ModelLoadError(f"{p}: big-endian GGUF files are not supported (use a little-endian one)")
        if version not in SUPPORTED_VERSIONS:
            raise ModelLoadError(f"{p}: unsupported GGUF version {version} (supported: 2, 3)")
        n_tensors = r.u64()
        n_kv = r.u64()
        # A key/value takes at least 13 bytes and a tensor info at least 24: bound the counts
        # before looping so a hostile count cannot spin for hours.
        if n_kv * 13 + n_tensors * 24 > r.remaining():
            raise Truncated
        metadata: dict[str, MetadataValue] = {}
        for _ in range(n_kv):
            key = r.string()
            value_type = r.u32()
            metadata[key] = read_value(r, value_type)
        tensors: list[RawTensor] = []
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.u32()
            if n_dims > 8:
                raise ValueError(f"tensor {name!r} has {n_dims} dimensions")
            shape = tuple(r.u64() for _ in range(n_dims))
            ggml_type = r.u32()
            offset = r.u64()
            tensors.append((name, shape, ggml_type, offset))
        return Header(version, metadata, tensors, r.offset)
    except Truncated:
        raise ModelLoadError(f"{p}: truncated or corrupt GGUF header") from None
    except (ValueError, struct.error) as e:
        raise ModelLoadError(f"{p}: corrupt GGUF header ({e})") from None


# --- the reader -----------------------------------------------------------------------------------


class Truncated(Exception):
    """A length or count in the header reaches past the end of the file."""


class HeaderReader:
    """Buffered, bounded little-endian reads over the header of an open file.

    Every length read from the file is checked against the bytes left in the file before
    anything is allocated, so a corrupt or hostile length fails fast as "truncated".
    """

    CHUNK = 1 << 20

    def __init__(self, f: BinaryIO, file_size: int) -> None:
        self.f = f
        self.file_size = file_size
        self.buf = b""
        self.pos = 0  # position within buf
        self.base = 0  # file offset of buf[0]

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def remaining(self) -> int:
        return self.file_size - self.offset

    def _ensure(self, n: int) -> None:
        if self.pos + n <= len(self.buf):
            return
        if n > self.remaining():
            raise Truncated
        tail = self.buf[self.pos :]
        self.base += self.pos
        self.pos = 0
        more = self.f.read(max(n - len(tail), self.CHUNK))
        self.buf = tail + more
        if len(self.buf) < n:
            raise Truncated

    def unpack(self, fmt: str, size: int) -> Scalar:
        self._ensure(size)
        value: Scalar = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def u32(self) -> int:
        return int(self.unpack("<I", 4))

    def u64(self) -> int:
        return int(self.unpack("<Q", 8))

    def string(self) -> str:
        n = self.u64()
        if n > self.remaining():
            raise Truncated
        if n > MAX_KEPT_STRING:
            raise ValueError(f"a string of {n:,} bytes at offset {self.offset - 8}")
        self._ensure(n)
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        # The hot loop of the whole reader: tokenizer vocabularies and merges are 30k-250k
        # strings each. Work on local copies of the buffer and position, and go back to the
        # bounded `_ensure` only when a string crosses the end of the buffer.
        unpack_from = struct.unpack_from
        buf, pos, end = self.buf, self.pos, len(self.buf)
        for _ in range(count):
            if pos + 8 > end:
                self.pos = pos
                self._ensure(8)
                buf, pos, end = self.buf, self.pos, len(self.buf)
            n = unpack_from("<Q", buf, pos)[0]
            pos += 8
            if pos + n > end:
                # Crosses the buffer: `skip` seeks past it rather than reading it in.
                self.pos = pos
                self.skip(n)
                buf, pos, end = self.buf, self.pos, len(self.buf)
                continue
            pos += n
        self.pos = pos

    def skip(self, n: int) -> None:
        if n > self.remaining():
            raise Truncated
        if self.pos + n <= len(self.buf):
            self.pos += n
            return
        # Jump past the buffer without reading what lies between.
        target = self.offset + n
        self.f.seek(target)
        self.base = target
        self.buf = b""
        self.pos = 0

    def array_of(self, fmt: str, size: int, count: int) -> list[MetadataValue]:
        total = size * count
        self._ensure(total)
        values: list[MetadataValue] = list(struct.unpack_from(f"<{count}{fmt[1:]}", self.buf, self.pos))
        self.pos += total
        return values


def _scalar_size(value_type: int) -> int:
    return struct.calcsize(_SCALAR_FORMATS[value_type])


def read_value(r: HeaderReader, value_type: int, depth: int = 0) -> MetadataValue:
    """One metadata value of `value_type`; arrays nest at most three deep."""
    if value_type in _SCALAR_FORMATS:
        return r.unpack(_SCALAR_FORMATS[value_type], _scalar_size(value_type))
    if value_type == _T_STRING:
        return r.string()
    if value_type == _T_ARRAY:
        if depth > 2:
            raise ValueError("arrays nested too deeply")
        item_type = r.u32()
        count = r.u64()
        # Each item takes at least its scalar size (8 for a string's length): bound the count.
        min_item = 8 if item_type in (_T_STRING, _T_ARRAY) else _scalar_size_or_fail(item_type)
        if count * min_item > r.remaining():
            raise Truncated
        type_name = _VALUE_TYPE_NAMES.get(item_type, str(item_type))
        if item_type == _T_STRING:
            if count > MAX_KEPT_ARRAY:
                r.skip_strings(count)
                return SkippedArray(type_name, count)
            return [r.string() for _ in range(count)]
        if item_type == _T_ARRAY:
            if count > MAX_KEPT_ARRAY:
                raise ValueError(f"a nested array of {count:,} arrays")
            return [read_value(r, _T_ARRAY, depth + 1) for _ in range(count)]
        size = _scalar_size(item_type)
        if count > MAX_KEPT_ARRAY:
            r.skip(size * count)
            return SkippedArray(type_name, count)
        return r.array_of(_SCALAR_FORMATS[item_type], size, count)
    raise ValueError(f"unknown metadata value type {value_type}")


def _scalar_size_or_fail(value_type: int) -> int:
    if value_type not in _SCALAR_FORMATS:
        raise ValueError(f"unknown metadata value type {value_type}")
    return _scalar_size(value_type)
