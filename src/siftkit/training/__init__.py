"""Fine-tuning shared by the bench and by every method that trains on part of the pool.

- :mod:`.train`: the assistant-masked example builder (``build_examples``) and ``train_cell`` (TRL's
  ``SFTTrainer``, LoRA merged back into the model);
- :mod:`.settings`: ``TRAIN_DEFAULTS`` / ``LR_DEFAULTS`` and ``train_settings`` (the ``train:`` shape);
- :mod:`.base`: ``BaseLM``, a base model loaded once and fine-tuned as fresh copies (DiverseEvol's rounds,
  Cherry's brief experience, LESS's warm-up).

Heavy dependencies (torch, transformers, trl, peft, datasets) are imported inside the functions that need them.
"""
