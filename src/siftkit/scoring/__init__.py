"""Model-based scoring: one causal-LM engine behind perplexity, IFD, DEITA, SelectIT and knowledge signals.

Everything here imports torch/transformers lazily; importing ``siftkit.scoring`` itself is cheap.
See ``docs/scoring.md`` for the signals, their columns, templates, truncation and reason codes.
"""
