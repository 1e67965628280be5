"""Rule packs: loading, the expression compiler, evaluation and contact policy."""
