"""A generative judge: any checkpoint, through our Sampler, labels steps.

`ModelJudge` (registered as 'model') follows SWiRL's judge: the model sees
the context and the step, is told to judge only the last step (an answer
must follow from the search results / computed values; a query is judged on
whether it helps), and ends with 'Explain your reasoning and then answer
with either "GOOD" or "BAD".' All requests of a `judge_steps` call go to the
sampler in one batched `generate` call (or in chunks of `batch_size`).

The verdict is the LAST occurrence of the word GOOD or BAD in the reply
(case-sensitive, as a whole word, so '**GOOD**', '"BAD".' and 'Verdict:
GOOD' all count, 'good' and 'GOODS' do not). A reply without either gets
`default_label` (BAD: reward 0) with `parsed=False`; such replies are
counted in `last_stats` and `num_unparsed`.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Optional, Sequence

import gin

from swirl_jax import tokenizer as tokenizer_lib
from swirl_jax.judges import base
from swirl_jax.judges import rules
from swirl_jax.rollout import actions

INSTRUCTION = ('Explain your reasoning and then answer with either "GOOD" or '
               '"BAD".')

JUDGE_PROMPT = """\
You are grading one step of an assistant that solves a task step by step \
with tools. At every step the assistant thinks, then either calls one tool or \
gives its final answer; each tool result comes back in the next user message \
in the form "QUERY -> RESULT".

Here is the conversation so far, before the step to grade:

{context}

Here is the step to grade, the assistant's latest message:

[Assistant]
{action}

Judge only this last step; the earlier steps are context and are not being \
graded. {guidance} A step is GOOD if it is a sound move toward solving the \
task, and BAD otherwise.

{instruction}"""

SEARCH_GUIDANCE = (
    "If the step is a search query, judge whether the query helps to find "
    "information the question needs that the earlier results do not already "
    "give. If the step is an answer, it is GOOD only if it follows from the "
    "search results in the conversation, not from outside knowledge or a "
    "guess.")
MATH_GUIDANCE = (
    "If the step is a calculation, judge whether it helps to solve the "
    "problem and uses the right numbers, taken from the problem or from "
    "earlier results. If the step is an answer, it is GOOD only if it follows "
    "from the values computed in the conversation.")
GENERIC_GUIDANCE = (
    "If the step calls a tool, judge whether the call helps to solve the "
    "task. If the step is an answer, it is GOOD only if it follows from the "
    "tool results and the reasoning in the conversation.")

_ROLE_NAMES = {"user": "User", "model": "Assistant"}
_VERDICT_RE = re.compile(r"(?<![A-Za-z0-9_])(GOOD|BAD)(?![A-Za-z0-9_])")


def parse_verdict(reply: str) -> Optional[str]:
  """'GOOD' or 'BAD': the last whole-word occurrence in `reply`, else None."""
  found = _VERDICT_RE.findall(reply or "")
  return found[-1] if found else None


def guidance_for(task_name: str) -> str:
  """The judging guidance for the task's tools (search, math or generic)."""
  tags = rules.task_tool_tags(task_name) or ()
  if rules.SEARCH_TAG in tags and rules.MATH_TAG not in tags:
    return SEARCH_GUIDANCE
  if rules.MATH_TAG in tags and rules.SEARCH_TAG not in tags:
    return MATH_GUIDANCE
  return GENERIC_GUIDANCE


def render_context(context_turns: Sequence[base.Turn]) -> str:
  """The turns as '[User]\\n...' / '[Assistant]\\n...' blocks."""
  blocks = []
  for role, text in context_turns:
    blocks.append(f"[{_ROLE_NAMES.get(role, role)}]\n{text.strip()}")
  return "\n\n".join(blocks)


def build_prompt(request: base.JudgeRequest,
                 template: str = JUDGE_PROMPT) -> str:
  """The judge's user-turn text for one request."""
  return template.format(
      context=render_context(request.context_turns),
      action=actions.strip_end_of_turn(request.action_text).strip(),
      guidance=guidance_for(request.task_name), instruction=INSTRUCTION)


@gin.configurable(module="swirl_jax.judges")
@base.register_judge("model")
class ModelJudge(base.Judge):
  """SWiRL's generative process judge on any model behind a Sampler.

      judge = ModelJudge(sampling.chat_sampler(config, tok, params), tok)
      results = judge.judge_steps(requests)

  Args:
    sampler: a `swirl_jax.sampling.Sampler` (or anything with the same
      `generate(prompts, max_new_tokens, temperature=, top_k=, top_p=,
      stop_tokens=, seed=)` returning `.tokens` and `.done`).
    tokenizer: a `swirl_jax.tokenizer.Tokenizer`, or the path of its model.
    max_new_tokens: reply budget (reasoning plus verdict).
    temperature: 0.0 for greedy decoding (the default).
    top_k / top_p: sampling filters when temperature > 0.
    seed: sampling seed of the first call (call i uses seed + i).
    default_label: the label of a reply without a verdict ('BAD': reward
      0.0, or 'GOOD': reward 1.0).
    max_prompt_tokens: longest prompt; longer prompts lose tokens from the
      middle of the conversation (counted in `last_stats`). None: the
      sampler's `config.max_seq_len - max_new_tokens` if it has one, else no
      limit.
    batch_size: requests per sampler call (None: all in one call).
    template: the prompt template (fields: context, action, guidance,
      instruction).
  """

  def __init__(self, sampler: Any, tokenizer: Any, *,
               max_new_tokens: int = 256, temperature: float = 0.0,
               top_k: Optional[int] = None, top_p: Optional[float] = None,
               seed: int = 0, default_label: str = base.BAD,
               max_prompt_tokens: Optional[int] = None,
               batch_size: Optional[int] = None,
               template: str = JUDGE_PROMPT):
    if not callable(getattr(sampler, "generate", None)):
      raise TypeError(f"sampler must have a generate() method, got "
                      f"{type(sampler).__name__}.")
    if isinstance(tokenizer, (str, os.PathLike)):
      from swirl_jax.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
      tokenizer = Tokenizer(tokenizer)
    if int(max_new_tokens) < 1:
      raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    if temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {temperature}.")
    if default_label not in base.LABELS:
      raise ValueError(f"default_label must be one of {list(base.LABELS)}, "
                       f"got {default_label!r}.")
    if batch_size is not None and int(batch_size) < 1:
      raise ValueError(f"batch_size must be None or >= 1, got {batch_size}.")
    for field in ("{context}", "{action}", "{instruction}"):
      if field not in template:
        raise ValueError(f"The judge template lacks the field {field}.")
    if max_prompt_tokens is None:
      max_seq_len = getattr(getattr(sampler, "config", None), "max_seq_len",
                            None)
      if max_seq_len:
        max_prompt_tokens = int(max_seq_len) - int(max_new_tokens)
    if max_prompt_tokens is not None and int(max_prompt_tokens) < 16:
      raise ValueError(f"max_prompt_tokens must be >= 16, got "
                       f"{max_prompt_tokens} (is max_new_tokens="
                       f"{max_new_tokens} too large for the model?).")
    self.sampler = sampler
    self.tokenizer = tokenizer
    self.max_new_tokens = int(max_new_tokens)
    self.temperature = float(temperature)
    self.top_k = top_k
    self.top_p = top_p
    self.seed = int(seed)
    self.default_label = default_label
    self.max_prompt_tokens = (None if max_prompt_tokens is None
                              else int(max_prompt_tokens))
    self.batch_size = None if batch_size is None else int(batch_size)
    self.template = template
    self._stop_ids = tokenizer_lib.stop_ids(tokenizer)
    self._calls = 0
    self.num_requests = 0
    self.num_unparsed = 0
    self.last_stats: dict[str, Any] = {}

  def build_prompt(self, request: base.JudgeRequest) -> str:
    """The judge's user-turn text for `request`."""
    return build_prompt(request, self.template)

  def _encode(self, text: str) -> tuple[list[int], bool]:
    ids = list(self.tokenizer.encode_chat([("user", text)]))
    limit = self.max_prompt_tokens
    if limit is None or len(ids) <= limit:
      return ids, False
    head = limit // 4
    return ids[:head] + ids[len(ids) - (limit - head):], True

  def _generate(self, prompts: list[list[int]]) -> list[str]:
    out = self.sampler.generate(
        prompts, self.max_new_tokens, temperature=self.temperature,
        top_k=self.top_k, top_p=self.top_p, stop_tokens=self._stop_ids,
        seed=self.seed + self._calls)
    self._calls += 1
    replies = []
    for ids in out.tokens:
      ids = [int(t) for t in ids]
      while ids and ids[-1] in self._stop_ids:
        ids.pop()
      replies.append(actions.strip_end_of_turn(self.tokenizer.decode(ids)))
    return replies

  def judge_steps(self, requests: Sequence[base.JudgeRequest]
                  ) -> list[base.JudgeResult]:
    """Judges all requests with one batched sampler call (see `batch_size`)."""
    requests = list(requests)
    start = time.perf_counter()
    if not requests:
      self.last_stats = {"requests": 0, "unparsed": 0, "truncated_prompts": 0,
                         "good": 0, "sampler_calls": 0, "seconds": 0.0}
      return []
    encoded = [self._encode(self.build_prompt(r)) for r in requests]
    prompts = [ids for ids, _ in encoded]
    size = self.batch_size or len(prompts)
    replies, calls = [], 0
    for i in range(0, len(prompts), size):
      replies.extend(self._generate(prompts[i:i + size]))
      calls += 1
    if len(replies) != len(requests):
      raise ValueError(f"The sampler returned {len(replies)} replies for "
                       f"{len(requests)} prompts.")
    results = [self.parse_reply(r) for r in replies]
    unparsed = sum(not r.parsed for r in results)
    self.num_requests += len(results)
    self.num_unparsed += unparsed
    self.last_stats = {
        "requests": len(results), "unparsed": unparsed,
        "truncated_prompts": sum(t for _, t in encoded),
        "good": sum(r.good for r in results), "sampler_calls": calls,
        "seconds": time.perf_counter() - start}
    return results

  def parse_reply(self, reply: str) -> base.JudgeResult:
    """The JudgeResult of one reply (the default label if it has none)."""
    label = parse_verdict(reply)
    if label is None:
      return base.JudgeResult.of(
          self.default_label == base.GOOD,
          f"[no GOOD/BAD verdict in the judge's reply; default "
          f"{self.default_label}] {reply.strip()}", parsed=False)
    return base.JudgeResult.of(label == base.GOOD, reply.strip())


@gin.configurable(module="swirl_jax.judges")
def model_judge(checkpoint: str = gin.REQUIRED, model_config: Any = gin.REQUIRED,
                tokenizer_path: str = gin.REQUIRED, *,
                prompt_bucket: int = 128, batch_bucket: int = 8,
                **judge_kwargs) -> ModelJudge:
  """A `ModelJudge` on a checkpoint: what paper-scale gin files bind.

  Args:
    checkpoint: 'hf:DIR', 'kaggle:DIR' or a swirl_jax workdir (the paper's
      judge is Gemma 2 27B itself).
    model_config: the judge model's TransformerConfig.
    tokenizer_path: its sentencepiece model.
    prompt_bucket / batch_bucket: the judge sampler's padding buckets.
    **judge_kwargs: `ModelJudge` options (max_new_tokens, batch_size, ...).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from swirl_jax.sampling import chat_sampler  # pylint: disable=g-import-not-at-top
  from swirl_jax.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  from swirl_jax.training.trainer import load_initial_params  # pylint: disable=g-import-not-at-top
  tokenizer = Tokenizer(tokenizer_path)
  from swirl_jax.stages import policy_shardings  # pylint: disable=g-import-not-at-top
  params = load_initial_params(checkpoint, model_config, jax.random.key(0),
                               policy_shardings(model_config))
  sampler = chat_sampler(model_config, tokenizer, params,
                         prompt_bucket=prompt_bucket,
                         batch_bucket=batch_bucket)
  return ModelJudge(sampler, tokenizer, **judge_kwargs)
