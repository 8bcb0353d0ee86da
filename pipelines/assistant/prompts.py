"""The answer prompt: a YAML file in the repository seeds MLflow's prompt registry; answers load it by alias.

The file (``dags/prompts/docs_answer.yaml``) holds the system text, few-shot examples and the user template
with ``{{ context }}`` and ``{{ question }}``. :func:`seed_prompt` registers it as a chat prompt (a list of
messages) when no version of the prompt has the same content (its digest is the version's
``loopline.content_digest`` tag), and gives it the alias (``champion``) only when the prompt has none, so
a person's choice of champion is never overridden; new content while a champion serves gets ``@challenger``,
which the llm_eval gate judges before it may become the champion. :func:`load_champion` reads the version the alias
names now (no cache: moving the alias takes effect on the next answer). mlflow is imported inside functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from pipelines.core import tracking
from pipelines.core.errors import NotRetryable
from pipelines.core.settings import LooplineSettings, get_settings

if TYPE_CHECKING:
    from pipelines.assistant.config import AssistantConfig

log = logging.getLogger(__name__)

DIGEST_TAG = "loopline.content_digest"
SOURCE_TAG = "loopline.source"
CHALLENGER = "challenger"  # a new version of the file waits here for the llm_eval gate (docs/llm-eval.md)
VARIABLES = ("context", "question")
# One pass over the template: a chunk that happens to contain "{{ question }}" is not substituted again.
PLACEHOLDER = re.compile(r"\{\{\s*(context|question)\s*\}\}")


class PromptUnavailable(NotRetryable):
    """The prompt file is unusable, or the registry has no such prompt or alias; the message says what to do."""


@dataclass(frozen=True)
class PromptFile:
    """A prompt YAML file: system text, few-shot examples (context, question, answer) and the user template."""

    system: str
    examples: tuple[tuple[str, str, str], ...]
    user: str

    def messages(self) -> list[dict[str, str]]:
        """The chat prompt as registered: system, each example as a user/assistant pair, the user template."""
        chat = [{"role": "system", "content": self.system}]
        for context, question, answer in self.examples:
            chat.append({"role": "user", "content": render_text(self.user, context=context, question=question)})
            chat.append({"role": "assistant", "content": answer})
        chat.append({"role": "user", "content": self.user})
        return chat


class SeededPrompt(TypedDict):
    """``seed_prompt``: the prompt, the file's version (new or found), where the alias points now, and whether the
    file's new content was given ``@challenger``."""

    name: str
    version: int
    registered: bool
    digest: str
    alias: str
    alias_version: int
    alias_set: bool
    challenger_set: bool
    source: str


@dataclass(frozen=True)
class ChampionPrompt:
    """The version the alias names: its number and its chat messages (with the two placeholders)."""

    name: str
    version: int
    messages: tuple[dict[str, str], ...]

    def render(self, context: str, question: str) -> list[dict[str, str]]:
        """The chat messages with the context and the question in place."""
        return [{"role": m["role"], "content": render_text(m["content"], context=context, question=question)}
                for m in self.messages]


def render_text(template: str, **values: str) -> str:
    """``template`` with each ``{{ context }}`` and ``{{ question }}`` replaced, in one pass."""
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def read_prompt_file(path: Path) -> PromptFile:
    """Read and check a prompt YAML file.

    Raises:
        PromptUnavailable: the file is missing or not YAML, a field is missing, or the user template lacks
            ``{{ context }}`` or ``{{ question }}``.
    """
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PromptUnavailable(f"prompt file {path} is unreadable: {exc}") from None
    if not isinstance(raw, dict):
        raise PromptUnavailable(f"prompt file {path}: expected a mapping with system, examples and user")
    problems = [f"{key}: missing or not text" for key in ("system", "user")
                if not isinstance(raw.get(key), str) or not raw[key].strip()]
    examples = []
    for n, item in enumerate(raw.get("examples") or [], 1):
        if not (isinstance(item, dict) and all(isinstance(item.get(k), str) and item[k].strip()
                                               for k in ("context", "question", "answer"))):
            problems.append(f"examples[{n}]: needs context, question and answer")
            continue
        examples.append((item["context"].strip(), item["question"].strip(), item["answer"].strip()))
    user = raw.get("user") if isinstance(raw.get("user"), str) else ""
    found = set(PLACEHOLDER.findall(user))
    problems += [f"user: has no {{{{ {name} }}}}" for name in VARIABLES if user and name not in found]
    if problems:
        raise PromptUnavailable(f"prompt file {path}: " + "; ".join(problems))
    return PromptFile(raw["system"].strip(), tuple(examples), user.strip())


def content_digest(messages: list[dict[str, str]]) -> str:
    """sha256 of the chat messages: the same content is registered once."""
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _versions(client: Any, name: str) -> list[Any]:
    from mlflow.exceptions import MlflowException

    try:
        return list(client.search_prompt_versions(name, max_results=1000))
    except MlflowException:  # no prompt of that name yet
        return []


def _alias_version(client: Any, name: str, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        return int(client.get_prompt_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def register_prompt(name: str, messages: list[dict[str, str]], *, source: str, message: str,
                    settings: LooplineSettings | None = None) -> tuple[int, bool]:
    """The version of prompt ``name`` with exactly ``messages``: the existing one, else a new one.

    Returns:
        (version, whether it was registered now).
    """
    import mlflow

    client = tracking.client(settings)
    digest = content_digest(messages)
    same = [v for v in _versions(client, name) if (v.tags or {}).get(DIGEST_TAG) == digest]
    if same:
        return min(int(v.version) for v in same), False
    registered = mlflow.genai.register_prompt(name=name, template=messages, commit_message=message,
                                              tags={DIGEST_TAG: digest, SOURCE_TAG: source})
    log.info("Registered prompt %s version %s from %s", name, registered.version, source)
    return int(registered.version), True


def set_alias(name: str, alias: str, version: int, settings: LooplineSettings | None = None) -> None:
    """Point ``alias`` of prompt ``name`` at ``version`` (how a new prompt version is rolled out)."""
    import mlflow

    tracking.configure_mlflow(settings)
    mlflow.genai.set_prompt_alias(name, alias=alias, version=int(version))


def seed_prompt(config: AssistantConfig, settings: LooplineSettings | None = None) -> SeededPrompt:
    """Register the config's prompt file if its content is new; give it the alias if the prompt has none.

    Raises:
        PromptUnavailable: the prompt file is unusable.
    """
    settings = settings or get_settings()
    path = settings.resolve(config.prompt.template_file)
    messages = read_prompt_file(path).messages()
    name, alias = config.prompt.name, config.prompt.alias
    version, registered = register_prompt(name, messages, source=config.prompt.template_file,
                                          message=f"seeded from {config.prompt.template_file}", settings=settings)
    current = _alias_version(tracking.client(settings), name, alias)
    alias_set = current is None
    challenger_set = False
    if alias_set:
        set_alias(name, alias, version, settings)
        log.info("Prompt %s had no %s: it is version %s now", name, alias, version)
    elif current != version and registered:
        # New content while a champion serves: a candidate for the llm_eval gate, never the champion directly.
        set_alias(name, CHALLENGER, version, settings)
        challenger_set = True
        log.info("Prompt %s@%s stays version %s; the file's new content is version %s, now @%s for the llm_eval "
                 "gate to judge", name, alias, current, version, CHALLENGER)
    elif current != version:
        log.info("Prompt %s@%s stays version %s; the file's content is version %s (move the alias to use it)",
                 name, alias, current, version)
    return {"name": name, "version": version, "registered": registered, "digest": content_digest(messages),
            "alias": alias, "alias_version": version if alias_set else int(current or version),
            "alias_set": alias_set, "challenger_set": challenger_set, "source": str(path)}


def load_champion(config: AssistantConfig, settings: LooplineSettings | None = None) -> ChampionPrompt:
    """The prompt version the config's alias names now (read without cache).

    Raises:
        PromptUnavailable: no such prompt or alias, or the version is not a chat with both placeholders.
    """
    import mlflow

    tracking.configure_mlflow(settings)
    name, alias = config.prompt.name, config.prompt.alias
    hint = (f"run the {config.dag_id} DAG (task seed_prompt) or `python -m pipelines.assistant seed-prompt "
            f"--config {config.dag_id}`")
    prompt = mlflow.genai.load_prompt(f"prompts:/{name}@{alias}", allow_missing=True, cache_ttl_seconds=0)
    if prompt is None:
        raise PromptUnavailable(f"prompt {name}@{alias} is not in the MLflow prompt registry "
                                f"({tracking.configure_mlflow(settings)}): {hint}")
    template = prompt.template
    if not isinstance(template, list):
        raise PromptUnavailable(f"prompt {name} version {prompt.version} is a text prompt; the assistant needs a chat "
                                f"prompt (a list of messages): register one from a prompt file and move @{alias}")
    found = {var for m in template for var in PLACEHOLDER.findall(str(m.get("content", "")))}
    missing = [v for v in VARIABLES if v not in found]
    if missing:
        raise PromptUnavailable(f"prompt {name} version {prompt.version} has no "
                                + ", ".join(f"{{{{ {v} }}}}" for v in missing) + f": fix it and move @{alias}")
    return ChampionPrompt(name, int(prompt.version),
                          tuple({"role": str(m["role"]), "content": str(m["content"])} for m in template))
