"""MLflow model code of a registered LoRA adapter (MLflow's "models from code"): base model + adapter → answers.

``tune_adapter`` logs this file as the model's code, with the adapter folder as the artifact ``adapter``
and the base model's folder in ``model_config["base_model_path"]``. It is loaded by MLflow only, never
imported by the pipelines, which is why it imports mlflow at the top (a ``PythonModel`` must subclass it).
It needs torch, transformers and peft, not Loopline. Serve it on another machine by passing the base
model's folder there: ``mlflow.pyfunc.load_model(uri, model_config={"base_model_path": "/models/base"})``.

Input: a DataFrame with an ``instruction`` column (or a list of strings). Output: one greedy answer each.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel

PROMPT = "### Instruction:\n{instruction}\n\n### Answer:\n"  # pipelines.lora.dataset.PROMPT


def prompt_ids(tokenizer, instruction: str) -> list[int]:
    """As ``pipelines.lora.dataset.prompt_ids`` (kept here: this file must not need Loopline): a user turn in
    the chat template when the tokenizer has one, else the plain prompt after BOS."""
    if getattr(tokenizer, "chat_template", None):
        return list(tokenizer.apply_chat_template([{"role": "user", "content": instruction}],
                                                  add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"])
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + tokenizer(PROMPT.format(instruction=instruction), add_special_tokens=False)["input_ids"]


class LoraAdapterModel(PythonModel):
    """Loads the base model from ``base_model_path`` and the adapter from the model's artifacts."""

    def load_context(self, context) -> None:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        config = context.model_config or {}
        base = config["base_model_path"]
        self.max_new_tokens = int(config.get("max_new_tokens", 64))
        self.tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True, dtype=torch.float32)
        self.model = PeftModel.from_pretrained(model, context.artifacts["adapter"]).eval()

    def predict(self, context, model_input, params=None) -> list[str]:
        import torch

        if hasattr(model_input, "columns"):
            instructions = [str(v) for v in model_input["instruction"]]
        else:
            instructions = [str(v) for v in model_input]
        answers = []
        for instruction in instructions:
            ids = prompt_ids(self.tokenizer, instruction)
            tensor = torch.tensor([ids])
            with torch.no_grad():
                out = self.model.generate(input_ids=tensor, attention_mask=torch.ones_like(tensor),
                                          max_new_tokens=self.max_new_tokens, do_sample=False,
                                          pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
            answers.append(self.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip())
        return answers


mlflow.models.set_model(LoraAdapterModel())
