"""The compiled core (Cython): decoding, connection tracking, both endpoints' state machines,
Zeek's view and the facts the classifier reads, over C-level data.

``seg.pxd`` is the segment every stage passes on; each ``.pyx`` has its ``.pxd`` beside it.
"""
