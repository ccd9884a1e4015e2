"""ployz: move containers and their ZFS volumes between machines.

Layers, top to bottom (nothing calls up): ``deploy`` (plans, migrate, drain) over ``control`` (the
durable facts) and ``agent`` (one daemon per machine) over ``runtime`` (containers) and
``transfer`` (the stream engine) over ``zfs`` (libzfs_core) over the native modules ``_lzc`` and
``_xfer``.
"""

__version__ = "0.1.0"
