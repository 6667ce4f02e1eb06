"""Relay Chat: a streaming Gradio chat front end with a routing layer."""

__version__ = "0.1.0"
