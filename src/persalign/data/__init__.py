"""Per-user preference data: loaders for each source and the benchmark builders.

    from persalign.data import BUILDERS, BuildOptions, load_benchmark
    BUILDERS.names()
    # ['jsonl', 'pref-acl', 'pref-lamp', 'prism', 'sim', 'tldr']
    BUILDERS.get("tldr")(BuildOptions(source="../shared/data/tldr",
        split_file="../shared/data/tldr/pal_worker_ids.json"), "out/tldr")
    bench = load_benchmark("out/tldr")

The source modules register their builders when the registry is first looked up.
"""

from persalign.data.benchmark_folder import load_benchmark, write_benchmark
from persalign.data.registry import BUILDERS, BuildOptions

__all__ = ["BUILDERS", "BuildOptions", "load_benchmark", "write_benchmark"]
