"""gRPC speech-to-text service (faster-whisper) of the chatbot stack."""

__version__ = "0.1.0"
