"""SWiRL stage 1: judge every step, filter trajectories, split into records.

    labels = judge_trajectories(trajs, judge)            # one batched call
    kept = filter_trajectories(trajs, labels, 'process')
    stats = filter_statistics(trajs, labels, kept, 'process')
    write_statistics(workdir, stats)
    records = [r for t, l in zip(trajs, labels) if t in kept
               for r in sub_trajectories(t, l)]

The four filters of the paper (`FILTERS`):

* 'none': keep every trajectory.
* 'process': keep a trajectory only if the judge labels every step GOOD
  (whatever its final answer; the paper's best choice).
* 'outcome': keep a trajectory only if its final answer is correct.
* 'process_and_outcome': both.

A kept trajectory with k actions gives k sub-trajectory records
(`sub_trajectories`), one per (context, action) pair, with the fields of
`RECORD_FIELDS`: the examples of the TFDS dataset (`data.trajectories`).
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
import tempfile
from typing import Any, Mapping, Optional, Sequence

from swirl_jax.data import record_fields
from swirl_jax.judges import base as judge_base
from swirl_jax.rollout import trajectory as traj_lib

NONE = "none"
PROCESS = "process"
OUTCOME = "outcome"
PROCESS_AND_OUTCOME = "process_and_outcome"
FILTERS = (NONE, PROCESS, OUTCOME, PROCESS_AND_OUTCOME)

STATISTICS_FILENAME = "filter_statistics.json"

# The fields of a sub-trajectory record and their Python types. Missing
# values (no tool, no final answer) are empty strings, never None.
RECORD_KIND = "a sub-trajectory record"
RECORD_FIELDS: dict[str, type] = {
    "trajectory_id": str,   # f"{task}/{example_id}/{sample_index}"
    "task": str,            # the source task's registry name
    "example_id": str,
    "sample_index": int,
    "step_index": int,      # i: the action's position (0-based)
    "num_steps": int,       # k: actions in the trajectory
    "context": str,         # JSON list of [role, text]: turns[:2*i + 1]
    "action": str,          # the action's text (turns[2*i + 1])
    "kind": str,            # 'tool', 'answer' or 'malformed'
    "tool": str,            # the tool tag called ('' if none)
    "tool_input": str,      # the call's content ('' if none)
    "tool_result": str,     # what the tool returned ('' if none)
    "label": str,           # the judge's 'GOOD' / 'BAD'
    "reward": float,        # the judge's reward in [0, 1]
    "judge_parsed": bool,   # False: the judge gave no verdict (default used)
    "explanation": str,     # the judge's explanation
    "outcome": bool,        # the trajectory's final answer is correct
    "final_answer": str,    # the trajectory's parsed answer ('' if none)
    "finish_reason": str,
    "question": str,
    "gold": str,
}


def check_filter(strategy: str) -> str:
  """`strategy` if it is one of `FILTERS`; ValueError naming close ones."""
  if strategy not in FILTERS:
    close = difflib.get_close_matches(str(strategy), FILTERS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"Unknown filter {strategy!r}.{hint} Choose one of "
                     f"{list(FILTERS)}.")
  return strategy


def trajectory_id(traj: traj_lib.Trajectory) -> str:
  """f"{task}/{example_id}/{sample_index}"."""
  return f"{traj.task}/{traj.example_id}/{traj.sample_index}"


def _check_labels(trajs: Sequence[traj_lib.Trajectory],
                  labels: Sequence[Sequence[judge_base.JudgeResult]]) -> None:
  if len(labels) != len(trajs):
    raise ValueError(f"Got labels for {len(labels)} trajectories but "
                     f"{len(trajs)} trajectories; give one list per "
                     "trajectory.")
  for t, l in zip(trajs, labels):
    if len(l) != t.num_steps:
      raise ValueError(f"Trajectory {trajectory_id(t)} has {t.num_steps} "
                       f"steps but {len(l)} labels.")


def judge_requests(traj: traj_lib.Trajectory,
                   example_metadata: Optional[Mapping[str, Any]] = None
                   ) -> list[judge_base.JudgeRequest]:
  """One JudgeRequest per action of `traj` (its context and the action)."""
  return [judge_base.JudgeRequest(
      task_name=traj.task, question=traj.question,
      context_turns=tuple(context), action_text=action, step_index=i,
      example_metadata=dict(example_metadata or {}), gold=traj.gold)
          for i, (context, action) in enumerate(traj.states_and_actions())]


def judge_trajectories(
    trajs: Sequence[traj_lib.Trajectory], judge: judge_base.Judge,
    example_metadata: Optional[Mapping[str, Mapping[str, Any]]] = None
) -> list[list[judge_base.JudgeResult]]:
  """Labels every step of every trajectory with ONE `judge.judge_steps` call.

  Args:
    trajs: the trajectories.
    judge: a `Judge`.
    example_metadata: optional example id -> `Example.metadata`, passed to
      the judge in each request.

  Returns:
    labels[j][i]: the JudgeResult of step i of trajectory j.
  """
  example_metadata = example_metadata or {}
  per_traj = [judge_requests(t, example_metadata.get(t.example_id))
              for t in trajs]
  requests = [r for reqs in per_traj for r in reqs]
  results = iter(judge_base.check_results(judge.judge_steps(requests),
                                          len(requests), judge))
  return [list(itertools.islice(results, len(reqs))) for reqs in per_traj]


def passes(traj: traj_lib.Trajectory,
           labels: Sequence[judge_base.JudgeResult], strategy: str) -> bool:
  """Whether one trajectory passes the filter `strategy`."""
  process_ok = all(l.good for l in labels)
  if strategy == NONE:
    return True
  if strategy == PROCESS:
    return process_ok
  if strategy == OUTCOME:
    return traj.correct
  if strategy == PROCESS_AND_OUTCOME:
    return process_ok and traj.correct
  check_filter(strategy)
  raise AssertionError(strategy)  # unreachable


def filter_trajectories(trajs: Sequence[traj_lib.Trajectory],
                        labels: Sequence[Sequence[judge_base.JudgeResult]],
                        strategy: str) -> list[traj_lib.Trajectory]:
  """The trajectories that pass `strategy` (one of `FILTERS`), in order."""
  check_filter(strategy)
  _check_labels(trajs, labels)
  return [t for t, l in zip(trajs, labels) if passes(t, l, strategy)]


def _rate(good: int, n: int) -> Optional[float]:
  return good / n if n else None


def _label_counts(label_lists) -> dict[str, Any]:
  flat = [l for ls in label_lists for l in ls]
  good = sum(l.good for l in flat)
  return {"steps": len(flat), "good": good, "good_rate": _rate(good, len(flat))}


def filter_statistics(trajs: Sequence[traj_lib.Trajectory],
                      labels: Sequence[Sequence[judge_base.JudgeResult]],
                      kept: Sequence[traj_lib.Trajectory],
                      strategy: Optional[str] = None) -> dict[str, Any]:
  """What the filters keep and how the judge labelled the steps.

  Args:
    trajs: all trajectories.
    labels: their step labels (`judge_trajectories`).
    kept: the trajectories kept by the chosen filter (a subset of `trajs`).
    strategy: the chosen filter's name, recorded in the result.

  Returns:
    A JSON-serialisable dict:
      'strategy', 'num_trajectories', 'num_steps', 'accuracy' (fraction of
      trajectories with a correct answer), 'process_label_rate' (fraction of
      GOOD steps), 'unparsed_labels' (steps the judge gave no verdict for),
      'kept': {'trajectories', 'steps', 'fraction'} of the chosen filter,
      'kept_per_filter': the same for each of the four filters,
      'label_rate_by_position': {str(i): {'steps', 'good', 'good_rate'}},
      'label_rate_by_outcome': {'correct' / 'incorrect': {'trajectories',
        'steps', 'good', 'good_rate'}},
      'by_task': {task: {'trajectories', 'steps', 'good', 'good_rate',
        'accuracy', 'kept_per_filter': {filter: trajectories}}}.
  """
  _check_labels(trajs, labels)
  if strategy is not None:
    check_filter(strategy)
  n = len(trajs)
  kept_ids = {id(t) for t in kept}
  if len(kept_ids) != len(kept):
    raise ValueError("kept lists a trajectory twice.")
  if not kept_ids <= {id(t) for t in trajs}:
    raise ValueError("kept holds trajectories that are not in trajs; pass the "
                     "list filter_trajectories returned.")

  def summary(mask: Sequence[bool]) -> dict[str, Any]:
    chosen = [t for t, m in zip(trajs, mask) if m]
    return {"trajectories": len(chosen),
            "steps": sum(t.num_steps for t in chosen),
            "fraction": _rate(len(chosen), n)}

  per_filter = {f: summary([passes(t, l, f) for t, l in zip(trajs, labels)])
                for f in FILTERS}

  by_outcome = {}
  for name, want in (("correct", True), ("incorrect", False)):
    group = [l for t, l in zip(trajs, labels) if t.correct == want]
    by_outcome[name] = {"trajectories": len(group), **_label_counts(group)}

  by_task = {}
  for task in sorted({t.task for t in trajs}):
    idx = [j for j, t in enumerate(trajs) if t.task == task]
    by_task[task] = {
        "trajectories": len(idx), **_label_counts([labels[j] for j in idx]),
        "accuracy": _rate(sum(trajs[j].correct for j in idx), len(idx)),
        "kept_per_filter": {
            f: sum(passes(trajs[j], labels[j], f) for j in idx)
            for f in FILTERS}}

  overall = _label_counts(labels)
  return {
      "strategy": strategy,
      "num_trajectories": n,
      "num_steps": overall["steps"],
      "accuracy": _rate(sum(t.correct for t in trajs), n),
      "process_label_rate": overall["good_rate"],
      "unparsed_labels": sum(not l.parsed for ls in labels for l in ls),
      "kept": summary([id(t) in kept_ids for t in trajs]),
      "kept_per_filter": per_filter,
      "label_rate_by_position": {
          str(i): _label_counts([ls[i:i + 1] for ls in labels])
          for i in range(max((len(ls) for ls in labels), default=0))},
      "label_rate_by_outcome": by_outcome,
      "by_task": by_task,
  }


def write_statistics(workdir: str | os.PathLike, stats: Mapping[str, Any],
                     filename: str = STATISTICS_FILENAME) -> str:
  """Writes `stats` as indented JSON to workdir/filename, atomically;
  returns the file's path."""
  workdir = os.fspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, filename)
  fd, tmp = tempfile.mkstemp(dir=workdir, prefix=".tmp-", suffix=".json")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(stats, f, indent=2, sort_keys=True)
      f.write("\n")
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def sub_trajectories(traj: traj_lib.Trajectory,
                     labels: Sequence[judge_base.JudgeResult]
                     ) -> list[dict[str, Any]]:
  """SWiRL's split of a trajectory with k actions, given its k step labels:
  k records with the fields of `RECORD_FIELDS` (plain Python types; missing
  values are '')."""
  _check_labels([traj], [labels])
  tid = trajectory_id(traj)
  out = []
  for (context, action), step, label in zip(traj.states_and_actions(),
                                             traj.steps, labels):
    out.append({
        "trajectory_id": tid,
        "task": traj.task,
        "example_id": traj.example_id,
        "sample_index": int(traj.sample_index),
        "step_index": int(step.index),
        "num_steps": traj.num_steps,
        "context": json.dumps([[r, t] for r, t in context],
                              ensure_ascii=False),
        "action": action,
        "kind": step.kind,
        "tool": step.tool or "",
        "tool_input": step.tool_input or "",
        "tool_result": step.tool_result or "",
        "label": label.label,
        "reward": float(label.reward),
        "judge_parsed": bool(label.parsed),
        "explanation": label.explanation,
        "outcome": traj.correct,
        "final_answer": traj.final_answer or "",
        "finish_reason": traj.finish_reason,
        "question": traj.question,
        "gold": traj.gold,
    })
  return out


def all_sub_trajectories(trajs: Sequence[traj_lib.Trajectory],
                         labels: Sequence[Sequence[judge_base.JudgeResult]]
                         ) -> list[dict[str, Any]]:
  """`sub_trajectories` of every trajectory, concatenated in order."""
  _check_labels(trajs, labels)
  return [r for t, l in zip(trajs, labels) for r in sub_trajectories(t, l)]


def context_turns(record: Mapping[str, Any]) -> list[tuple[str, str]]:
  """The record's context as a list of (role, text) turns."""
  return [(str(r), str(t)) for r, t in json.loads(record["context"])]


def judge_request_for_record(
    record: Mapping[str, Any], action_text: Optional[str] = None,
    example_metadata: Optional[Mapping[str, Any]] = None
) -> judge_base.JudgeRequest:
  """A JudgeRequest for a record's state and an action (stage 2's reward).

  action_text: the action to judge in the record's context (None: the
  record's own action); example_metadata goes to the judge.
  """
  return judge_base.JudgeRequest(
      task_name=str(record["task"]), question=str(record["question"]),
      context_turns=tuple(context_turns(record)),
      action_text=record["action"] if action_text is None else action_text,
      step_index=int(record["step_index"]),
      example_metadata=dict(example_metadata or {}),
      gold=str(record["gold"]))


def check_record(record: Mapping[str, Any], where: str = "record") -> None:
  """`RecordFieldError` (a ValueError) naming the field if `record` does not
  match RECORD_FIELDS (`data.record_fields.check_record`)."""
  record_fields.check_record(record, RECORD_FIELDS, where, RECORD_KIND)
