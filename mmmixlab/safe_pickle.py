"""Reading pickled ``.npy`` files from others without running their code.

OpenShape ships each training shape, and some evaluation files (``test_pc.npy``,
``xyz_label.npy``, ``cat_name_pt_feat.npy`` in its dict form), as ``np.save(path, obj)`` of a
Python object: reading them with ``np.load(allow_pickle=True)`` runs whatever a doctored file
asks for. :func:`load_npy` reads the same files with an unpickler that admits only what such
files hold: numpy arrays, dtypes and scalars, and the containers and atoms pickle writes
natively (dicts, lists, tuples, strings, bytes, numbers, booleans, None). Any other global
(``os.system``, ``builtins.eval``, a class of some package) raises :class:`UnsafePickleError`
naming the file and the global, before anything is called.
"""

from __future__ import annotations

import ast
import io
import pickle
import struct
from pathlib import Path

import numpy as np

__all__ = ["UnsafePickleError", "load_npy", "restricted_loads"]

# (module, name) pairs a pickled numpy object array of plain data refers to. numpy 2 writes
# ``numpy._core``; files written by numpy 1.x say ``numpy.core``.
_ALLOWED = {
    (mod, name)
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how protocol-2 pickles (Python 2 era files) spell bytes
}


class UnsafePickleError(ValueError):
    """A pickled file asked for a global outside the allowlist (it would run code)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, where: str):
        super().__init__(file)
        self.where = where

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise UnsafePickleError(f"{self.where}: refusing to unpickle {module}.{name} (only numpy "
                                f"arrays, dtypes and plain containers are allowed; a file asking "
                                f"for anything else could run code)")


def restricted_loads(data: bytes, where: str = "<bytes>"):
    """``pickle.loads`` limited to plain data and numpy arrays (see the module docstring)."""
    return _RestrictedUnpickler(io.BytesIO(data), where).load()


def read_npy_header(f, where: str) -> tuple[np.dtype, tuple, bool]:
    """(dtype, shape, fortran_order) of the ``.npy`` file open at position 0 in ``f``; leaves
    ``f`` at the first data byte. Any format version (1.0, 2.0, 3.0)."""
    version = np.lib.format.read_magic(f)
    size_format = "<H" if version[0] == 1 else "<I"
    raw = f.read(struct.calcsize(size_format))
    if len(raw) != struct.calcsize(size_format):
        raise ValueError(f"{where}: truncated .npy header")
    (length,) = struct.unpack(size_format, raw)
    header = f.read(length)
    if len(header) != length:
        raise ValueError(f"{where}: truncated .npy header")
    try:
        meta = ast.literal_eval(header.decode("utf-8" if version[0] >= 3 else "latin1"))
        return (np.dtype(np.lib.format.descr_to_dtype(meta["descr"])), tuple(meta["shape"]),
                bool(meta["fortran_order"]))
    except (ValueError, SyntaxError, KeyError, TypeError) as e:
        raise ValueError(f"{where}: unreadable .npy header ({e})") from e


def load_npy(path, mmap_mode=None):
    """``np.load`` of one ``.npy`` file; object arrays go through the restricted unpickler and
    come back as ``np.load(allow_pickle=True)`` would return them (a 0-d object array for a
    saved dict: use ``.item()``). Plain arrays are read with ``allow_pickle=False``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file missing")
    with open(path, "rb") as f:
        dtype = read_npy_header(f, str(path))[0]
        if dtype.hasobject:
            try:
                return _RestrictedUnpickler(f, str(path)).load()
            except UnsafePickleError:
                raise
            except Exception as e:  # truncated pickles raise EOFError, UnpicklingError, ...
                raise ValueError(f"{path}: corrupt or truncated pickled .npy file "
                                 f"({type(e).__name__}: {e})") from e
    return np.load(path, allow_pickle=False, mmap_mode=mmap_mode)
