"""One model behind the OpenAI API: continuous batching over llama.cpp, thinking separated from the answer."""
