"""The wire APIs: one module per API (OpenAI chat completions, completions, Anthropic Messages, OpenAI Responses,
embeddings), each `respond(runtime, request)` over the chat core or the embedder, with the bodies, SSE framing
and logprobs they share."""
