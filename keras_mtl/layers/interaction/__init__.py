"""Feature-interaction layers: crosses, attention over fields, field-aware products."""
