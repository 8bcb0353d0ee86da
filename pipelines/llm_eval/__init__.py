"""LLM evaluation: an assistant asked a golden set, its answers scored by deterministic code scorers in MLflow.

``config`` declares the ``llm_eval`` template's model; ``golden`` reads and validates the golden set (YAML, pinned
by its sha256); ``scorers`` holds the measures (retrieval, correctness, groundedness, citations, refusals, cost)
and their MLflow ``@scorer`` form; ``steps`` one function per task (load, answer and score through
``mlflow.genai.evaluate``, report); ``report`` the HTML page. ``python -m pipelines.llm_eval run docs`` runs it
from a shell. Module tops import the standard library, pydantic, PyYAML and ``pipelines.core`` only.
"""
