"""Knowledge bases: uploads, the ingestion queue and pipeline, index generations, hybrid
retrieval with citations (the stores they use are kubechat.stores)."""
