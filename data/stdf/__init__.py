"""STDF V4, the format testers write: `writer` turns generated wafers into files, `reader` reads them back.

data/writers.py registers the writer as format "stdf" and data/readers.py the reader; docs/stdf.md
says what they do with each record and why they are written on `struct` rather than an STDF package.
"""
