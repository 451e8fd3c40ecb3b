"""Users and their credentials: passwords, API keys, browser sessions."""
