"""Test-session settings shared by every test module.

Hypothesis profiles for the fuzz tests: ``ci`` (the default) keeps each fuzz test to a few seconds; ``long`` runs
thousands of cases: ``python -m pytest tests/test_fuzz_inputs.py --hypothesis-profile=long``.
"""

from __future__ import annotations

import os
import signal
import tempfile

from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much]}
settings.register_profile("ci", max_examples=50, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=1500, **_COMMON)
settings.load_profile("ci")

# The count cache (cabench.measure.count_cache) of this test session lives in a fresh temporary folder, never in
# the user's ~/.cache; subprocesses started by tests inherit it.
os.environ.setdefault("CABENCH_CACHE_DIR", tempfile.mkdtemp(prefix="cabench-test-count-cache-"))

# A session started in the background from a script (`pytest &`) inherits SIGINT ignored, and Python then installs
# no KeyboardInterrupt handler, so cabench's Ctrl-C handling stays off (DeferSigint only acts on the default
# handler). The Ctrl-C tests exercise what a user at a terminal gets: give the session Python's default handler.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
