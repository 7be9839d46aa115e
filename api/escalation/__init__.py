"""The emergency demo (``seed-demo`` / ``serve --demo``): duty contacts and one closed incident replayed
through the real code paths. The domain itself is :mod:`api.services.emergency`, the worker :mod:`api.worker`.
"""
