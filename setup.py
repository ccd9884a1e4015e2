"""Builds the native parts: ployz._lzc (cffi, API mode, over libzfs_core/libzfs/libnvpair) and one
Cython extension per ``native/*.pyx`` (the data path)."""

import os
import shutil
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent

cython_extensions = [
    Extension(
        f"ployz._{pyx.stem}",
        [str(pyx.relative_to(HERE))],
        extra_compile_args=["-O2"],
        # the data path's headers: a change to any of them rebuilds the extension
        depends=[str(h.relative_to(HERE)) for h in sorted((HERE / "native").glob("**/*.h"))],
    )
    for pyx in sorted((HERE / "native").glob("*.pyx"))
]



class ReplacingBuildExt(build_ext):
    """Puts each built module in place by a rename, never by rewriting the file: a process that
    has the old module loaded (an agent, a test running in the VM on this same tree) keeps its
    mapping of the old file instead of crashing when it is rewritten underneath it."""

    def copy_file(self, infile, outfile, *args, **kwargs):  # type: ignore[override]
        if not str(outfile).endswith(".so"):
            return super().copy_file(infile, outfile, *args, **kwargs)
        partial = f"{outfile}.partial-{os.getpid()}"
        shutil.copy2(infile, partial)
        os.replace(partial, outfile)
        return outfile, 1


setup(
    cmdclass={"build_ext": ReplacingBuildExt},
    ext_modules=cythonize(cython_extensions, language_level=3, quiet=True),
    cffi_modules=["native/lzc_build.py:ffibuilder"],
)
