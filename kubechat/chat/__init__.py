"""Chat: one generation path for every transport.

A request is prepared once (checked, its model, tools and images resolved: `ChatService.prepare`),
grounded (images described, sources retrieved, the prompt cited: `ChatService.ground`), then
generated as typed domain events (`Generation.events`, kubechat.chat.events): the WebSocket's
stored turn (`ChatService.run_turn`) and the stateless OpenAI-compatible completion
(`ChatService.complete`) are two thin users of that one path.
"""
