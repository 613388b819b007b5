"""Intake: the tracker script, beacon handlers, parsing and screening of a beacon into a `Hit`.

Knows nothing of how counters are stored: it hands a `Hit` to `aggregations`.
"""
