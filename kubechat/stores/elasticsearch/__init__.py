"""The cluster stores on Elasticsearch: one client per process, one retry and bulk path."""
