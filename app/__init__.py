"""adaptd: adapt an LLM by in-context learning or LoRA fine-tuning, served behind one API."""
