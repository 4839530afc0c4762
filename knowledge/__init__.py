"""Service-guide knowledge base: Markdown topics, hybrid BM25 + dense search, CLI (``python -m knowledge``)."""
