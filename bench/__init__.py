"""The benchmark suite, run by hand (`python -m bench`), never by the tests.

It measures the service against a bare aiohttp app on the same machine, the same event loop and
the same load, and prints ratios rather than absolute figures alone, because a shared 2-core
machine is noisy: only numbers measured side by side in one run compare.
"""
