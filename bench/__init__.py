"""The fan-out benchmark: floor, baseline and streamapp measured side by side (``python -m bench``).

Also a tiny Django app (``BenchTask``), installed only by ``bench.settings``.
"""
