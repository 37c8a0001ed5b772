"""Build the compiled kernels; everything else is declared in pyproject.toml.

The hot paths (G.711 decode/encode, stereo interleave) live in one Cython
module so that a plain ``pip install .`` on a fresh machine builds them with
nothing but a C compiler and the Python headers.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "mediacore._codecs",
        ["mediacore/_codecs.pyx"],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "mediacore.rtp._recorder",
        ["mediacore/rtp/_recorder.pyx"],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "mediacore.rtp._engine",
        ["mediacore/rtp/_engine.pyx"],
        extra_compile_args=["-O3"],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
)
