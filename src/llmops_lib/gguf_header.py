"""A fast reader of a GGUF file's header: metadata and tensor table, no weights.

Why not `gguf.GGUFReader`: it builds a numpy memmap view for every element of every array, and
the default model's 262,144-token vocabulary took it 38–63 s on this machine; walking the header
with `struct` takes well under a second. Type constants and block sizes still come from the
`gguf` package, so there is one source for the format's facts.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType, GGUFValueType

_SCALARS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}


@dataclass(frozen=True)
class ArrayInfo:
    """An array value, summarized: its element type and length (vocabularies are huge)."""

    item_type: GGUFValueType
    length: int


@dataclass(frozen=True)
class TensorEntry:
    name: str
    shape: tuple[int, ...]
    type: GGMLQuantizationType
    offset: int  # from the start of the data section

    @property
    def n_elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def n_bytes(self) -> int:
        block_size, type_size = GGML_QUANT_SIZES[self.type]
        return self.n_elements // block_size * type_size


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    fields: dict[str, object]
    tensors: list[TensorEntry]
    data_offset: int


class _Cursor:
    def __init__(self, buffer: mmap.mmap) -> None:
        self.buffer = buffer
        self.pos = 0

    def unpack(self, fmt: str) -> object:
        (value,) = struct.unpack_from(fmt, self.buffer, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.unpack("<Q")
        if self.pos + length > len(self.buffer):
            raise struct.error("string runs past the end of the file")
        text = self.buffer[self.pos : self.pos + length].decode("utf-8", errors="replace")
        self.pos += length
        return text

    def value(self, kind: GGUFValueType) -> object:
        if kind == GGUFValueType.STRING:
            return self.string()
        if kind == GGUFValueType.ARRAY:
            item_type = GGUFValueType(self.unpack("<I"))
            length = self.unpack("<Q")
            if item_type == GGUFValueType.STRING:
                for _ in range(length):  # lengths differ: walk them
                    self.pos += 8 + struct.unpack_from("<Q", self.buffer, self.pos)[0]
            elif item_type in _SCALARS:
                self.pos += length * struct.calcsize(_SCALARS[item_type])
            else:
                raise ValueError(f"nested arrays of {item_type.name} are not supported")
            return ArrayInfo(item_type, length)
        return self.unpack(_SCALARS[kind])


def read_header(path: Path) -> GGUFHeader:
    """Parse the header of a GGUF file (v2 or v3).

    Raises:
        ValueError, struct.error: the file is not GGUF or its header is damaged or cut short.
    """
    with path.open("rb") as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
        cursor = _Cursor(buffer)
        if buffer[:4] != b"GGUF":
            raise ValueError("missing GGUF magic")
        cursor.pos = 4
        version = cursor.unpack("<I")
        if version not in (2, 3):
            raise ValueError(f"unsupported GGUF version {version}")
        tensor_count = cursor.unpack("<Q")
        field_count = cursor.unpack("<Q")
        fields = {}
        for _ in range(field_count):
            key = cursor.string()
            fields[key] = cursor.value(GGUFValueType(cursor.unpack("<I")))
        tensors = []
        for _ in range(tensor_count):
            name = cursor.string()
            n_dims = cursor.unpack("<I")
            shape = tuple(cursor.unpack("<Q") for _ in range(n_dims))
            kind = GGMLQuantizationType(cursor.unpack("<I"))
            tensors.append(TensorEntry(name, shape, kind, cursor.unpack("<Q")))
        alignment = int(fields.get("general.alignment", GGUF_DEFAULT_ALIGNMENT))
        data_offset = -(-cursor.pos // alignment) * alignment
    return GGUFHeader(version, fields, tensors, data_offset)
