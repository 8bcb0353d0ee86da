"""The docs assistant: questions answered from the live RAG index by a small local instruction-tuned model.

``config`` declares the ``assistant`` template's model; ``steps`` holds one function per task. The work is
in ``model`` (SmolLM2-135M-Instruct from its GGUF file, converted once; load once; greedy generation),
``prompts`` (the prompt file, MLflow's prompt registry, the champion and challenger aliases), ``questions``
(checks, content words; ``redact``), ``pii`` (Presidio's pattern recognizers behind ``redact``), ``guard`` (the
input guard against prompt injection, for questions and passages), ``retrieval`` (the index's config, live
version and search), ``context``
(numbered passages within a token budget, the refusal gate, citations), ``query_log`` (one row per
answer, the daily token budget), ``answer`` (the whole path inside one MLflow trace) and ``feedback``
(thumbs on a trace). ``python -m pipelines.assistant`` asks, records feedback and seeds the prompt. Module
tops import the standard library, pydantic and ``pipelines.core`` only; torch, transformers, peft and
mlflow are imported inside the functions that use them.
"""
