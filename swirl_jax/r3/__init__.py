"""R3: Reflect, Retry, Reward (arXiv 2505.24726) on swirl_jax.

* `failures`: the failure dataset (queries the model fails, with the failed
  attempt).
* `batches`: the online GRPO batch (G reflections per failed query, reward =
  the retry is correct, only reflection tokens in the loss).
* `experiment`: `R3Config` and the experiment, stage by stage.

Elsewhere: the tasks and their compact prompts `swirl_jax.tasks.compact`;
warm-start data `data.reflection_demonstrations`; evaluation
`evaluation.reflect_retry`; the report `evaluation.r3_report`. Modules are
imported on use; this package imports nothing heavy.
"""
