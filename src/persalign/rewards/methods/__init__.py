"""One module per reward method; importing this package registers them all."""

from persalign.rewards.methods import (
    genarm,  # noqa: F401
    global_rm,  # noqa: F401
    lore,  # noqa: F401
    mpu,  # noqa: F401
    p_dpo,  # noqa: F401
    pal,  # noqa: F401
    pref,  # noqa: F401
    vpl,  # noqa: F401
)
