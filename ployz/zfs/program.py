"""Read-only ZFS channel programs: how we list and read properties through libzfs_core alone.

lzc has no listing or property-reading call for snapshots, and libzfs's API is not stable across
releases; a channel program run with ``lzc_channel_program_nosync`` reads the same facts without
waiting for a transaction group.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ployz._lzc import lib
from ployz.zfs.core import enc, ensure_init
from ployz.zfs.errors import DatasetNotFound, translate
from ployz.zfs.names import pool_of
from ployz.zfs.nvlist import NvValue, nvlist_in, nvlist_out, to_dict

_INSTRUCTION_LIMIT = 10_000_000
_MEMORY_LIMIT = 10 * 1024 * 1024
U64 = 1 << 64


def run_readonly(name: str, source: str, args: Mapping[str, NvValue], action: str) -> Any:
    """Runs ``source`` in the pool of dataset ``name`` with ``args`` and returns what it
    returned. Lua integers are signed: callers fold 64-bit unsigned values with ``% U64``."""
    ensure_init()
    pool = pool_of(name)
    with nvlist_in(dict(args)) as nvargs, nvlist_out() as out:
        rc = lib.lzc_channel_program_nosync(enc(pool), source.encode(), _INSTRUCTION_LIMIT,
                                            _MEMORY_LIMIT, nvargs, out)
        result = to_dict(out[0])
    if rc != 0:
        if not lib.lzc_exists(enc(name)):
            raise DatasetNotFound(rc, name, f"{action}: does not exist")
        detail = str(result.get("error", "")).strip()
        raise translate(rc, name, None, f"{action} {detail}".rstrip())
    return result.get("return")
