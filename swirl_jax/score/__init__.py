"""SCoRe (arXiv 2409.12917): training LLMs to self-correct with two-attempt RL.

Modules:
  episodes    two-attempt episodes beyond `RolloutEngine.run_two_attempts`:
              base-model first attempts, single attempts, Self-Refine.
  batches     `TwoAttemptBatchBuilder` (the trainer's batch_fn: on-policy
              episodes -> `score_stage1` / `score_stage2` rows) and the
              adaptive beta2 controller.
  experiment  `ScoreConfig` (the settings; gin binds its fields) and
              `score_experiment`: warm start -> Stage I -> Stage II ->
              baselines (Self-Refine, STaR, Pair-SFT) -> ablations ->
              evaluation -> report, every stage resumable.

The CPU default's tasks ('math_small', 'code_small') are
`swirl_jax.tasks.small`; the warm-start and STaR / Pair-SFT data
`swirl_jax.data.correction_demonstrations`; the objectives
`swirl_jax.objectives.score`; the metrics and the inference-time scaling
evaluation `swirl_jax.evaluation.self_correction`, the report and its
headline `swirl_jax.evaluation.score_report`.
"""
