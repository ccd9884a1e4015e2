"""Builds the native parts: ployz._lzc (cffi, API mode, over libzfs_core/libzfs/libnvpair) and one
Cython extension per ``native/*.pyx`` (the data path)."""

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent

cython_extensions = [
    Extension(
        f"ployz._{pyx.stem}",
        [str(pyx.relative_to(HERE))],
        extra_compile_args=["-O2"],
    )
    for pyx in sorted((HERE / "native").glob("*.pyx"))
]

setup(
    ext_modules=cythonize(cython_extensions, language_level=3, quiet=True),
    cffi_modules=["native/lzc_build.py:ffibuilder"],
)
