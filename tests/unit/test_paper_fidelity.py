"""Every number the paper's number: one test per item of the fidelity issue (docs/fidelity.md).

The tests live in topic modules beside this one, which pytest does not collect on their own
(their names do not start with ``test_``); importing them here collects each item once:

    fidelity_scoring.py              1 P-DPO's own policy, 2 cumulative rewards, 3 comparisons
    fidelity_generation_metrics.py   4 BERTScore scale, 6 win rate (pooled, ties lose)
    fidelity_decoding.py             5 ICL triples, 13 ARGS fast == naive where lambda
                                     matters, 15 zero-shot == transformers, 16 sampling
    fidelity_methods.py              8 PAL, 9 VPL, 10 P-DPO learning rate, 11 MPU order,
                                     14 independent references
    fidelity_data_and_ci.py          7 PRISM configs, 12 Pref-LaMP embedding and items per
                                     user, 17 no silent skips, 18 learning on real data,
                                     19 RM accuracy by hand
"""

from .fidelity_data_and_ci import *  # noqa: F403
from .fidelity_decoding import *  # noqa: F403
from .fidelity_generation_metrics import *  # noqa: F403
from .fidelity_methods import *  # noqa: F403
from .fidelity_scoring import *  # noqa: F403
