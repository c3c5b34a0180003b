"""Adapters to the stores: protocols (history, documents, chunks, objects) and their
implementations, embedded (`sqlite/`, `objects/files.py`) and cluster (`elasticsearch/`,
`objects/s3.py`), which pass one conformance suite (tests/conformance/). `open.py` chooses.
"""
