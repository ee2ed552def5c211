"""``siftkit bench``: select with each method and with random seeds, fine-tune, evaluate, test vs random.

Heavy dependencies (torch, transformers, trl, peft, scipy) are imported inside the functions that need them.
"""
