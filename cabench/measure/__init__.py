"""Counting and timing: parameters and multiply-adds (complexity, count_cache), and ``cabench bench``'s one timer.

Kept torch-free, as the CLI reads :data:`DEFAULT_BENCH_ROWS` for ``cabench bench --help``.
"""

#: The rows ``cabench bench`` compares unless ``--rows`` says otherwise (see :mod:`cabench.measure.bench_rows`).
DEFAULT_BENCH_ROWS = ("baseline", "backbone", "se", "cbam", "ca", "authors_ca", "timm_ca")
