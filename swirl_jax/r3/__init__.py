"""R3: Reflect, Retry, Reward (arXiv 2505.24726) on swirl_jax.

The tasks (function calling, Countdown) are registered tasks; their compact
prompts and a fast Countdown generator are `swirl_jax.tasks.compact`.

* `failures`: the failure dataset (queries the model fails, with the failed
  attempt) as TFDS ArrayRecord shards, and its reader.
* `batches`: the online GRPO batch (G reflections per failed query, reward =
  the retry is correct, only reflection tokens in the loss).
* `experiment`: the gin-configurable experiment, stage by stage.

Its warm-start data (imperfect scripted answers, reflections and retries)
is `swirl_jax.data.reflection_demonstrations`; its evaluation (first- and
second-attempt accuracy, error categories) `swirl_jax.evaluation.
reflect_retry`, its report `swirl_jax.evaluation.r3_report`.

Modules are imported on use (`from swirl_jax.r3 import experiment`); this
package imports nothing heavy.
"""
