"""A fast reader of a GGUF file's header (metadata and tensor table, no weights) that checks its structure.

Why not `gguf.GGUFReader`: it builds a numpy memmap view for every element of every array, and
the default model's 262,144-token vocabulary took it 25–63 s on this machine; walking the header
with `struct` takes a fraction of a second. Type constants and block sizes still come from the
`gguf` package (`GGML_QUANT_SIZES`), so there is one source for the format's facts.

Why check the structure: one altered byte in a header (a dimension, a type id) still parses, and
reports a wrong parameter count without complaint. `read_header` therefore checks what llama.cpp's
own loader (`gguf_init_from_file`) checks: every tensor's type is known, its row a whole number of
blocks, its offset aligned and exactly where the previous tensor's padded data ends, and the data
section the size of the file. A weight byte flipped inside a valid structure cannot be seen here:
that is what the registry's sha256 is for.

Explained in: book/chapters/01_mlops_to_llmops (inspecting the model).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType, GGUFValueType

from llmops_lib.errors import ModelError

GGUF_MAGIC = b"GGUF"
"""The first four bytes of every GGUF file."""
GGUF_VERSIONS = (2, 3)
MAX_DIMS = 4  # GGML_MAX_DIMS: a tensor has one to four dimensions

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


class HeaderDamage(ValueError):
    """What is wrong in a GGUF header, in words (turned into a `ModelError` naming the file)."""


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
    alignment: int = GGUF_DEFAULT_ALIGNMENT


def align(offset: int, alignment: int) -> int:
    """`offset` rounded up to a multiple of `alignment` (GGML_PAD)."""
    return -(-offset // alignment) * alignment


class Cursor:
    """Reads little-endian values from a buffer, refusing to run past its end."""

    def __init__(self, buffer: mmap.mmap) -> None:
        self.buffer = buffer
        self.pos = 0

    def unpack(self, fmt: str) -> object:
        (value,) = struct.unpack_from(fmt, self.buffer, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def require(self, n_bytes: int, what: str) -> None:
        """Refuse a length read from the file that reaches past its end (a damaged count or length)."""
        if self.pos + n_bytes > len(self.buffer):
            raise HeaderDamage(f"{what} at byte {self.pos:,} runs past the end of the file")

    def skip(self, n_bytes: int, what: str) -> None:
        self.require(n_bytes, what)
        self.pos += n_bytes

    def string(self) -> str:
        length = self.unpack("<Q")
        start = self.pos
        self.skip(length, f"a string of {length:,} bytes")
        return self.buffer[start : self.pos].decode("utf-8", errors="replace")

    def value(self, kind: GGUFValueType) -> object:
        if kind == GGUFValueType.STRING:
            return self.string()
        if kind == GGUFValueType.ARRAY:
            item_type = _value_type(self.unpack("<I"))
            length = self.unpack("<Q")
            if item_type == GGUFValueType.STRING:
                self.require(8 * length, f"an array of {length:,} strings")  # each has at least its length
                for _ in range(length):  # lengths differ: walk them
                    self.skip(8 + struct.unpack_from("<Q", self.buffer, self.pos)[0], "a string in an array")
            elif item_type in _SCALARS:
                self.skip(length * struct.calcsize(_SCALARS[item_type]), f"an array of {length:,} values")
            else:
                raise HeaderDamage(f"nested arrays of {item_type.name} are not supported")
            return ArrayInfo(item_type, length)
        return self.unpack(_SCALARS[kind])


def _value_type(raw: int) -> GGUFValueType:
    try:
        return GGUFValueType(raw)
    except ValueError:
        raise HeaderDamage(f"a metadata value has type id {raw}, which GGUF does not define") from None


def _tensor(cursor: Cursor) -> TensorEntry:
    name = cursor.string()
    n_dims = cursor.unpack("<I")
    if not 1 <= n_dims <= MAX_DIMS:
        raise HeaderDamage(f"tensor {name!r} has {n_dims} dimensions (GGUF allows 1 to {MAX_DIMS})")
    shape = tuple(cursor.unpack("<Q") for _ in range(n_dims))
    type_id = cursor.unpack("<I")
    try:
        kind = GGMLQuantizationType(type_id)
        block_size, _ = GGML_QUANT_SIZES[kind]
    except (ValueError, KeyError):
        raise HeaderDamage(f"tensor {name!r} has type id {type_id}, which no known GGML type has") from None
    if shape[0] % block_size:
        raise HeaderDamage(
            f"tensor {name!r} has rows of {shape[0]:,} elements, not a whole number of {kind.name} blocks "
            f"({block_size} elements)"
        )
    return TensorEntry(name, shape, kind, cursor.unpack("<Q"))


def _parse(buffer: mmap.mmap) -> GGUFHeader:
    cursor = Cursor(buffer)
    cursor.pos = len(GGUF_MAGIC)
    version = cursor.unpack("<I")
    if version not in GGUF_VERSIONS:
        raise HeaderDamage(f"version {version} (GGUF versions are {GGUF_VERSIONS})")
    tensor_count, field_count = cursor.unpack("<Q"), cursor.unpack("<Q")
    if 12 * field_count + 24 * tensor_count > len(buffer):  # a key, a type; a name, a shape, a type, an offset
        raise HeaderDamage(
            f"the header counts {tensor_count:,} tensors and {field_count:,} metadata keys, more than its "
            f"{len(buffer):,} bytes can hold (a count was altered, or the file cut short)"
        )
    fields = {}
    for _ in range(field_count):
        key = cursor.string()
        fields[key] = cursor.value(_value_type(cursor.unpack("<I")))
    tensors = [_tensor(cursor) for _ in range(tensor_count)]
    alignment = fields.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise HeaderDamage(f"general.alignment is {alignment!r}, not a power of two")
    return GGUFHeader(version, fields, tensors, align(cursor.pos, alignment), alignment)


def _check_layout(header: GGUFHeader, file_size: int) -> None:
    """Tensors in table order, each where the previous one's padded data ends, as llama.cpp requires."""
    names: set[str] = set()
    expected, previous = 0, None
    for tensor in header.tensors:
        if tensor.name in names:
            raise HeaderDamage(f"tensor {tensor.name!r} appears twice in the tensor table")
        names.add(tensor.name)
        if tensor.offset % header.alignment:
            raise HeaderDamage(
                f"tensor {tensor.name!r} starts at data offset {tensor.offset:,}, "
                f"not a multiple of the alignment ({header.alignment} bytes)"
            )
        if tensor.offset != expected:
            before = (
                f"the tensor before it, {previous.name!r} ({previous.type.name}, shape {list(previous.shape)}), "
                f"ends at {expected:,}"
                if previous
                else "the first tensor must start at 0"
            )
            raise HeaderDamage(
                f"tensor {tensor.name!r} starts at data offset {tensor.offset:,}, but {before}: "
                "a shape, type or offset in the header does not match the data"
            )
        expected, previous = align(tensor.offset + tensor.n_bytes, header.alignment), tensor
    if previous is None:  # a vocabulary-only file: no data section to check
        return
    needed = header.data_offset + previous.offset + previous.n_bytes
    if file_size < needed:
        raise HeaderDamage(f"truncated: its tensors need {needed:,} bytes, the file has {file_size:,}")
    if file_size > header.data_offset + expected:
        raise HeaderDamage(
            f"{file_size - header.data_offset - expected:,} bytes after the last tensor's data "
            "(the tensor table does not describe the whole file)"
        )


def read_header(path: Path) -> GGUFHeader:
    """Parse the header of a GGUF file (v2 or v3) and check its structure against the file.

    Raises:
        ModelError: the file is not GGUF, or its header is damaged or disagrees with the file's size.
    """
    with path.open("rb") as stream:
        if stream.read(len(GGUF_MAGIC)) != GGUF_MAGIC:
            raise ModelError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")
        try:
            with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
                header = _parse(buffer)
                _check_layout(header, len(buffer))
        except (HeaderDamage, struct.error) as exc:
            reason = "the file ends inside its header (cut short)" if isinstance(exc, struct.error) else str(exc)
            raise ModelError(f"{path} is a damaged GGUF file: {reason}; replace it with an intact copy") from exc
    return header
