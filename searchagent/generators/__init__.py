"""Text generators behind one batched protocol (llama.cpp, transformers, OpenAI HTTP)."""
