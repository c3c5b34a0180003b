"""kubechat: a Kubernetes-native chatbot platform (operator, API and model repository)."""

__version__ = "0.1.0"
