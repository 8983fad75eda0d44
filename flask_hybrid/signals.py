"""Signals, in the manner of ``flask.signals``: see what flask-hybrid decides, without hooks.

::

    from flask_hybrid.signals import request_refused

    @request_refused.connect_via(app)
    def count(sender, code, reason, **extra):
        REFUSALS.labels(code=code, reason=reason).inc()

Inside a Flask app with :class:`~flask_hybrid.HybridEncryption` the sender is the app and the
receivers run in the request context. A :class:`~flask_hybrid.HybridMiddleware` used on its
own, around another WSGI app, sends them with itself as the sender.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: An encrypted request was opened and handed to the app. Keyword arguments: ``format``
#: (``"S"``, ``"E"`` or ``"J"``) and ``session_id`` (format S, or J with a session kid; else None).
request_decrypted = _signals.signal("flask-hybrid.request-decrypted")

#: A request was refused. Keyword arguments: ``code`` (the error table's code, what the
#: client sees) and ``reason`` (the internal cause, e.g. ``"tag_mismatch"``, ``"jti_seen"``,
#: ``"iat_out_of_window"``, ``"session_gone"``; it never reaches the client).
request_refused = _signals.signal("flask-hybrid.request-refused")
