"""Types of ``ployz._lzc``, the cffi module (API mode) that native/lzc_build.py compiles over
libzfs_core, libzfs and libnvpair. ``lib`` holds the functions, constants and enum values that
its CDEF declares and ``ffi`` is the module's cffi FFI object; neither is typed further, since
cffi describes them at run time."""

from typing import Any

ffi: Any
lib: Any
