# cython: language_level=3
"""Placeholder: the native decoder and record walker (being written)."""


cdef class NativeReader:
    cdef Py_ssize_t fill(self, Seg* out, Py_ssize_t cap) except -1:
        return 0
