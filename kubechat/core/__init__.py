"""The bottom layer: what every part of kubechat shares, depending on nothing else of it.

Resource models (ChatModel, KnowledgeBase), domain errors with their stable codes, pagination
and its cursor codec, the store settings every process reads, and the supervisors' back-off.
"""
