"""Public HTTP API of the chatbot stack."""
