"""Programs the operator ships as text into ChatModel pods whose images lack kubechat.

Each module here runs under another image's own `python3` (no kubechat, no third-party
packages beyond what that image has), so it imports nothing from kubechat. The modules are
package data that ruff and mypy check like the rest; `kubechat.operator.manifests` reads their
source into a ChatModel's ConfigMap.
"""
