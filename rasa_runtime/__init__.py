"""What the Rasa server process runs besides stock Rasa 3.6.21 to keep a turn cheap.

``tracker_store.HezeTrackerStore`` is the tracker store ``bot/endpoints.yml`` and
``deploy/endpoints.yml`` name; creating it installs ``patches`` (the one place where stock Rasa
functions are replaced, guarded by the pinned version). Runs in ``.venv-rasa`` (Python 3.10).
"""
