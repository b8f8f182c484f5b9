"""One module per reward method; importing this package registers them all."""

from persalign.rewards.methods import global_rm  # noqa: F401
