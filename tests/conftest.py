"""Test-session settings shared by every test module."""

from __future__ import annotations

import os
import tempfile

# The count cache (cabench.measure.count_cache) of this test session lives in a fresh temporary folder, never in
# the user's ~/.cache; subprocesses started by tests inherit it.
os.environ.setdefault("CABENCH_CACHE_DIR", tempfile.mkdtemp(prefix="cabench-test-count-cache-"))
