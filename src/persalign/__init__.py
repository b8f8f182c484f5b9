"""persalign: personalized alignment, evaluated end to end.

    import persalign
    persalign.__version__
    # '0.1.0'

Per-user preference benchmarks (``persalign.data``), personalized reward models
(``persalign.rewards``), reward-guided decoding and in-context learning (``persalign.decoding``),
and the metrics that tell whether a model writes what a given user would write
(``persalign.metrics``). The command line is ``persalign --help``.
"""

__version__ = "0.1.0"
