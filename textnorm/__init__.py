"""Text normalisation shared by the Rasa server (Python 3.10) and the action server.

Pure Python with no third-party imports, so both environments can import it.
"""
