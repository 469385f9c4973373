"""The audit trail: who created, deleted or repointed keys, templates, adapters and aliases."""
