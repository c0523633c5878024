# The one decoder: a captured frame (any link layer the reader knows) -> Seg, every read bounded
# by the captured length. Semantics: analyzer/capture/links.py and ip.py, exactly.
# decode.pyx owns this header; observer.pyx relies only on NativeReader.fill below.

from analyzer.core.seg cimport Seg

cdef class NativeReader:
    # Fill out[0:cap] with the next segments of the capture, in capture order (frames counted
    # as Wireshark does). Returns how many; 0 at the end of the input. Damage is recorded in
    # the reader's problems (as CaptureReader does) and ends the reading.
    cdef Py_ssize_t fill(self, Seg* out, Py_ssize_t cap) except -1
