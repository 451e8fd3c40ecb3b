"""Chat with text and images over gRPC, on Ollama or an in-process transformers model."""
