"""Conversion between Python values and libnvpair nvlists, the currency of every libzfs_core call.

Python to nvlist: ``None`` adds a name with no value (a "boolean" pair, how lzc spells a set),
``bool`` a boolean value, ``int`` a uint64, ``str`` a string, ``list[str]`` a string array and
``dict`` a nested nvlist.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ployz._lzc import ffi, lib

NvValue = Any


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise MemoryError(f"nvlist: {what} failed with errno {rc}")


def _build(values: Mapping[str, NvValue]) -> Any:
    nvl_p = ffi.new("nvlist_t **")
    _check(lib.nvlist_alloc(nvl_p, lib.NV_UNIQUE_NAME, 0), "nvlist_alloc")
    nvl = nvl_p[0]
    try:
        for key, value in values.items():
            name = key.encode()
            if value is None:
                rc = lib.nvlist_add_boolean(nvl, name)
            elif isinstance(value, bool):
                rc = lib.nvlist_add_boolean_value(nvl, name, int(value))
            elif isinstance(value, int):
                rc = lib.nvlist_add_uint64(nvl, name, value)
            elif isinstance(value, str):
                rc = lib.nvlist_add_string(nvl, name, value.encode())
            elif isinstance(value, Mapping):
                child = _build(value)
                try:
                    rc = lib.nvlist_add_nvlist(nvl, name, child)
                finally:
                    lib.nvlist_free(child)
            elif isinstance(value, list | tuple):
                items = [ffi.new("char[]", str(v).encode()) for v in value]
                rc = lib.nvlist_add_string_array(nvl, name, ffi.new("char *[]", items), len(items))
            else:
                raise TypeError(f"nvlist: cannot encode {key}={value!r}")
            _check(rc, f"adding {key}")
    except BaseException:
        lib.nvlist_free(nvl)
        raise
    return nvl


@contextmanager
def nvlist_in(values: Mapping[str, NvValue] | None) -> Iterator[Any]:
    """An nvlist built from ``values`` (NULL for None), freed on exit."""
    if values is None:
        yield ffi.NULL
        return
    nvl = _build(values)
    try:
        yield nvl
    finally:
        lib.nvlist_free(nvl)


@contextmanager
def nvlist_out() -> Iterator[Any]:
    """An ``nvlist_t **`` for a call to fill; whatever it points to is freed on exit."""
    holder = ffi.new("nvlist_t **")
    try:
        yield holder
    finally:
        if holder[0] != ffi.NULL:
            lib.nvlist_free(holder[0])


_SCALARS = {
    lib.DATA_TYPE_BOOLEAN_VALUE: ("boolean_t *", lib.nvpair_value_boolean_value, bool),
    lib.DATA_TYPE_BYTE: ("unsigned char *", lib.nvpair_value_byte, int),
    lib.DATA_TYPE_INT8: ("int8_t *", lib.nvpair_value_int8, int),
    lib.DATA_TYPE_UINT8: ("uint8_t *", lib.nvpair_value_uint8, int),
    lib.DATA_TYPE_INT16: ("int16_t *", lib.nvpair_value_int16, int),
    lib.DATA_TYPE_UINT16: ("uint16_t *", lib.nvpair_value_uint16, int),
    lib.DATA_TYPE_INT32: ("int32_t *", lib.nvpair_value_int32, int),
    lib.DATA_TYPE_UINT32: ("uint32_t *", lib.nvpair_value_uint32, int),
    lib.DATA_TYPE_INT64: ("int64_t *", lib.nvpair_value_int64, int),
    lib.DATA_TYPE_UINT64: ("uint64_t *", lib.nvpair_value_uint64, int),
}


def _pair_value(pair: Any) -> NvValue:
    kind = lib.nvpair_type(pair)
    if kind == lib.DATA_TYPE_BOOLEAN:
        return None
    if kind in _SCALARS:
        ctype, getter, conv = _SCALARS[kind]
        out = ffi.new(ctype)
        getter(pair, out)
        return conv(out[0])
    if kind == lib.DATA_TYPE_STRING:
        out = ffi.new("const char **")
        lib.nvpair_value_string(pair, out)
        return ffi.string(out[0]).decode()
    if kind == lib.DATA_TYPE_NVLIST:
        out = ffi.new("nvlist_t **")
        lib.nvpair_value_nvlist(pair, out)
        return to_dict(out[0])
    if kind == lib.DATA_TYPE_UINT64_ARRAY:
        arr, count = ffi.new("uint64_t **"), ffi.new("uint_t *")
        lib.nvpair_value_uint64_array(pair, arr, count)
        return [arr[0][i] for i in range(count[0])]
    if kind == lib.DATA_TYPE_STRING_ARRAY:
        sarr, count = ffi.new("const char ***"), ffi.new("uint_t *")
        lib.nvpair_value_string_array(pair, sarr, count)
        return [ffi.string(sarr[0][i]).decode() for i in range(count[0])]
    if kind == lib.DATA_TYPE_NVLIST_ARRAY:
        narr, count = ffi.new("nvlist_t ***"), ffi.new("uint_t *")
        lib.nvpair_value_nvlist_array(pair, narr, count)
        return [to_dict(narr[0][i]) for i in range(count[0])]
    name = ffi.string(lib.nvpair_name(pair)).decode()
    raise TypeError(f"nvlist: unsupported data type {kind} for {name!r}")


def to_dict(nvl: Any) -> dict[str, NvValue]:
    """A Python dict with the content of ``nvl`` (which stays owned by the caller)."""
    result: dict[str, NvValue] = {}
    if nvl == ffi.NULL:
        return result
    pair = lib.nvlist_next_nvpair(nvl, ffi.NULL)
    while pair != ffi.NULL:
        result[ffi.string(lib.nvpair_name(pair)).decode()] = _pair_value(pair)
        pair = lib.nvlist_next_nvpair(nvl, pair)
    return result


def unpack(packed: bytes) -> dict[str, NvValue]:
    """Decodes a packed (XDR or native) nvlist, as found inside resume tokens."""
    with nvlist_out() as out:
        rc = lib.nvlist_unpack(ffi.from_buffer(packed), len(packed), out, 0)
        if rc != 0:
            raise ValueError(f"not a packed nvlist (nvlist_unpack errno {rc})")
        return to_dict(out[0])
