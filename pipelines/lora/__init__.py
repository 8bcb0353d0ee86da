"""LoRA fine-tuning (PEFT) of a causal LM on instruction pairs from a docs corpus, gated and registered in MLflow.

``config`` declares the ``lora_tune`` template's model and its trigger form (``LORA_FORM``); ``steps`` holds
one function per task and the typed XCom each returns. The work is in ``base_model`` (build or check the
base model, digest it), ``dataset`` (the pairs), ``tuning`` (encode, attach the adapter, train, publish
the adapter folder), ``evaluation`` (scores, the merge check, the registration, champion and gate hand-off
decisions), ``experiment`` (what goes to MLflow) and ``lineage`` (the corpus and docs index version an adapter
learned from); ``adapter_pyfunc`` is the registered model's code. What ``make demo`` prints about a run is in
``pipelines.demo.lora``. Module tops import the standard library,
pydantic and ``pipelines.core`` only; torch, transformers, peft, mlflow and pandas are imported inside the
functions that use them.
"""
