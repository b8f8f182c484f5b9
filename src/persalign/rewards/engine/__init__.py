"""The reward models' engine room: what every method shares, none of it a method.

backbone       the causal LM with LoRA, hidden states and log-probs of token batches
pair_batching  tokenized pairs, shared-prompt rows and their 4D masks, length buckets
pair_rewards   prefix rewards of one shared-prompt row per pair (training and evaluation)
pair_eval      evaluation of pairs through the shared row where that is the base computation
training       the training loop: micro-batches under a token budget, exact accumulation
features       frozen-backbone training: each response's states computed once, cached on disk
memory         the peak-memory estimate and its warning
stepping       ARGS's step rewards against a cached prefix
inference      prefix / sequence rewards in batches, merged LoRA view
aggregation    token rewards to prefix rewards (last token, running mean)
saving         save / load: safetensors and a JSON config, written whole or not at all
"""
