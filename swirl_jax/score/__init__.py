"""SCoRe (arXiv 2409.12917): training LLMs to self-correct with two-attempt RL.

Modules:
  episodes    two-attempt episodes beyond `RolloutEngine.run_two_attempts`:
              base-model first attempts, single attempts, Self-Refine.
  batches     `TwoAttemptBatchBuilder` (on-policy episodes -> `score_stage1`
              / `score_stage2` rows) and the adaptive beta2 controller.
  experiment  `ScoreConfig` and `score_experiment`, every stage resumable.

Elsewhere: the CPU default's tasks `swirl_jax.tasks.small`; warm-start and
STaR / Pair-SFT data `data.correction_demonstrations`; the objectives
`objectives.score`; metrics and inference-time scaling
`evaluation.self_correction`; the report `evaluation.score_report`.
"""
