"""The routing layer: a request's `model` string -> the variant that serves it, and the
reverse question, who points at a model. Above the registry, templates and aliases domains;
below the API, inference and evaluations."""
