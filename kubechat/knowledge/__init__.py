"""Knowledge bases: document ingestion, chunk and object stores, hybrid retrieval with citations."""
