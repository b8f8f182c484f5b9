"""One module per reward method, each registered with ``@register_method``; the METHODS
registry imports every module here on its first lookup (persalign.registry.discover)."""
