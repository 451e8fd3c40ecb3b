"""Conversations: their storage, their images, and how a chat call becomes two stored turns."""
