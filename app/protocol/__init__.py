"""OpenAI wire types, kept apart from the serving logic so they are easy to check."""
