"""How a request names a model, and who refers to one.

The routing layer (`app/routing/`) and the domains below it (`registry`, `templates`,
`aliases`) share these few names. The domains never import the routing layer or one
another: a write path that must check a model takes one of the callables below, passed in
from above.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

ADAPTER_PREFIX = "ft:"
TEMPLATE_PREFIX = "tmpl:"


@dataclass(frozen=True)
class References:
    """What would stop serving without a model."""

    aliases: list[str]  # aliases whose current version targets it
    templates: list[str]  # templates with a version that runs on it
    # unfinished work that names it ("evaluation eval_...", "fine-tuning job ftjob-...")
    pending: list[str] = field(default_factory=list)

    def users(self) -> list[str]:
        """All of them, for a 409's message."""
        return (
            [f"alias '{a}'" for a in self.aliases]
            + [f"template '{t}'" for t in self.templates]
            + self.pending
        )


# model -> its kind ("base" | "adapter" | "template"), aliases not followed; raises
# app.errors.ModelNotFound when the tenant has no such model.
ModelKind = Callable[[str], str]

# model -> who points at it (for a `tmpl:<name>` model: at any version or tag of it).
ReferencesTo = Callable[[str], References]

# model -> None when the tenant can serve it (aliases followed, their traffic not counted);
# raises app.errors.ModelNotFound otherwise.
VariantCheck = Callable[[str], None]
