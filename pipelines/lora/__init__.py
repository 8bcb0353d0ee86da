"""LoRA fine-tuning (PEFT) of a causal LM on instruction pairs from a docs corpus, gated and registered in MLflow.

``base_model`` builds or checks the base model, ``dataset`` makes the pairs, ``tuning`` trains the adapter,
``evaluation`` scores base against base + adapter, ``steps`` holds one function per task of the
``lora_tune`` template. Module tops import the standard library only; torch, transformers and peft are
imported inside the functions that use them.
"""
