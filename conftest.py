"""pytest runs the collection in FAST mode unless told otherwise (ROMELIB_FAST=0 for full runs).

Set before any notebook kernel starts, so nbval's kernels inherit it.
"""
import os

os.environ.setdefault("ROMELIB_FAST", "1")
