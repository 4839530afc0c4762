"""Rasa input channels. Code here runs inside the Rasa server (Python 3.10, rasa 3.6)."""
