"""forensics: investigate abuse of LLM gateways from LiteLLM, nginx and provider logs."""
__version__ = "0.1.0"
