"""What owns llama.cpp: the decode thread (continuous batching, samplers, the prompt cache), the embedder, the
queue, stop strings and layer placement. Imports nothing from the chat or API wings."""
