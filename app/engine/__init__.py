"""The inference engine: one base model per process, adapters and templates on top."""
