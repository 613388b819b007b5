"""The counter model: Redis keys, periods, recording a hit, rollup into PostgreSQL, reads.

Bottom of the import chain (analytics -> collectors -> aggregations): nothing here knows
about HTTP.
"""
