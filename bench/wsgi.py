"""What gunicorn serves in the bench: the demo app with the bench's configuration.

The configuration comes as JSON in ``FLASK_HYBRID_BENCH_CONFIG`` (see ``bench/server.py``).
``FLASK_HYBRID_BENCH_POOL_QUIET`` (seconds) replaces the session-key pool with one of that quiet
period, to compare refill policies; no app should do this.
"""

from __future__ import annotations

import json
import os

import app as demo
from flask_hybrid.keypool import KeyPool

config = json.loads(os.environ.get("FLASK_HYBRID_BENCH_CONFIG", "{}"))
app = demo.create_app(config)

if "FLASK_HYBRID_BENCH_POOL_QUIET" in os.environ:  # an experiment of the bench only
    _sessions = app.extensions["hybrid"].sessions
    _sessions._key_pool = KeyPool(
        _sessions._key_pool.size,
        quiet_period=float(os.environ["FLASK_HYBRID_BENCH_POOL_QUIET"]),
    )
