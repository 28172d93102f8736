"""mmmixlab: MM-Mixing (multi-modal mixing alignment for 3D understanding) as a small library."""

__version__ = "0.1.0"
