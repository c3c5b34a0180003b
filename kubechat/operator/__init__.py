"""The kubechat operator: ChatModel → Triton deployments, KnowledgeBase → Elasticsearch indices."""
