"""Tests for swirl_jax.data.pipeline: sharding, shuffling, padding, packing,
batch format and iterator state."""

import json
import logging
import random
import re

import grain
import numpy as np
import pytest

from swirl_jax import tokenizer as tok
from swirl_jax.data import pipeline
from swirl_jax.data import sft

_ID = re.compile(r"Question (\d+):")


def _example(i: int):
  rng = random.Random(i)
  a, b = rng.randint(0, 999), rng.randint(1, 99)
  # Targets of varying length so packing has something to do.
  target = f"The answer is <answer> {a + b} </answer>." + " Yes." * (i % 4)
  return {"prompt": f"Question {i}: what is {a} plus {b}?", "target": target}


def _examples(n: int):
  return [_example(i) for i in range(n)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  texts = []
  for i in range(300):
    ex = _example(i)
    texts.append(tok.format_chat([("user", ex["prompt"]),
                                  ("model", ex["target"])],
                                 add_generation_prompt=False))
  path = tmp_path_factory.mktemp("spm") / "pipeline.model"
  return tok.Tokenizer(tok.train_sentencepiece(texts, str(path),
                                               vocab_size=1024))


def _make(examples, tokenizer, **kwargs):
  args = dict(seq_len=64, global_batch_size=4, seed=0, process_index=0,
              process_count=1, num_threads=2, prefetch_buffer_size=16)
  args.update(kwargs)
  return pipeline.make_sft_dataset(examples, tokenizer, **args)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _segments(batch):
  """Yields (row, segment_id, {key: [len] array}) for every packed sequence."""
  for row in range(batch["inputs"].shape[0]):
    seg = batch["segment_ids"][row]
    for s in np.unique(seg[seg > 0]):
      idx = np.flatnonzero(seg == s)
      yield row, int(s), {k: v[row, idx] for k, v in batch.items()}


def _ids(batches, tokenizer):
  """Example ids in batch order, read back from the decoded prompts."""
  ids = []
  for batch in batches:
    for _, _, seq in _segments(batch):
      ids.append(int(_ID.search(tokenizer.decode(seq["inputs"])).group(1)))
  return ids


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


# -- batch format --------------------------------------------------------------


@pytest.mark.parametrize("pack", [False, True])
def test_batch_format_is_the_trainer_contract(tokenizer, pack):
  batch = next(iter(_make(_examples(16), tokenizer, pack=pack,
                          global_batch_size=8, process_count=2)))
  assert set(batch) == {"inputs", "targets", "loss_mask", "positions",
                        "segment_ids"}
  spec = pipeline.batch_spec(4, 64)
  for key, array in batch.items():
    assert isinstance(array, np.ndarray)
    assert (array.shape, array.dtype) == spec[key], key


@pytest.mark.parametrize("pack", [False, True])
def test_sequences_match_tokenisation_and_are_shifted(tokenizer, pack):
  batches = _take(iter(_make(_examples(24), tokenizer, pack=pack,
                             seq_len=96)), 3)
  num_segments = 0
  for batch in batches:
    for _, _, seq in _segments(batch):
      num_segments += 1
      i = int(_ID.search(tokenizer.decode(seq["inputs"])).group(1))
      ex = _example(i)
      expected = sft.tokenize_sft_example(tokenizer, ex["prompt"],
                                          ex["target"])
      np.testing.assert_array_equal(seq["inputs"], expected["tokens"])
      # targets = inputs shifted left within the sequence, 0 at its end.
      np.testing.assert_array_equal(seq["targets"][:-1], seq["inputs"][1:])
      assert seq["targets"][-1] == 0 and seq["loss_mask"][-1] == 0
      # The mask covers exactly the target tokens plus <end_of_turn>.
      np.testing.assert_array_equal(seq["loss_mask"][:-1],
                                    expected["loss_mask"][1:])
      supervised = seq["targets"][seq["loss_mask"] == 1]
      assert tokenizer.decode(supervised) == ex["target"] + tok.END_OF_TURN
      np.testing.assert_array_equal(seq["positions"],
                                    np.arange(len(seq["inputs"])))
  assert num_segments >= 12


@pytest.mark.parametrize("pack", [False, True])
def test_padding_is_inert(tokenizer, pack):
  for batch in _take(iter(_make(_examples(16), tokenizer, pack=pack)), 4):
    pad = batch["segment_ids"] == 0
    assert pad.any()
    for key in ("inputs", "targets", "positions"):
      assert not batch[key][pad].any(), key
    assert not batch["loss_mask"][pad].any()
    # Right padding: once a row is padded it stays padded.
    assert (np.diff(pad.astype(int), axis=1) >= 0).all()


def test_packing_keeps_sequences_apart(tokenizer):
  batches = _take(iter(_make(_examples(40), tokenizer, pack=True,
                             seq_len=160)), 4)
  max_segments = 0
  for batch in batches:
    seg, mask, pos = (batch["segment_ids"], batch["loss_mask"],
                      batch["positions"])
    max_segments = max(max_segments, int(seg.max()))
    for row in range(seg.shape[0]):
      used = seg[row][seg[row] > 0]
      # Segments are 1, 2, ..., k in order, contiguous.
      np.testing.assert_array_equal(np.unique(used),
                                    np.arange(1, used.max() + 1))
      assert (np.diff(used) >= 0).all()
      # A supervised target is always the next token of the same sequence.
      for t in np.flatnonzero(mask[row]):
        assert t + 1 < seg.shape[1] and seg[row, t + 1] == seg[row, t]
      # Positions restart at 0 at every segment start.
      starts = np.flatnonzero(np.diff(np.concatenate([[0], seg[row]])) > 0)
      assert (pos[row, starts] == 0).all()
  assert max_segments >= 2, "nothing was packed"
  # Packing fills rows better than padding.
  padded = _take(iter(_make(_examples(40), tokenizer, seq_len=160)), 4)
  fill = lambda bs: np.mean([b["segment_ids"] > 0 for b in bs])
  assert fill(batches) > 1.5 * fill(padded)


def test_multiturn_records_go_through_the_pipeline(tokenizer):
  turns = [("user", "Question 5: what is 1 plus 2?"),
           ("model", "<math_exp> 1 + 2 </math_exp>"),
           ("user", "1 + 2 -> 3"), ("model", "<answer> 3 </answer>")]
  batch = next(iter(_make([{"turns": turns}] * 4, tokenizer, shuffle=False)))
  expected = sft.tokenize_multiturn(tokenizer, turns)
  n = len(expected["tokens"])
  np.testing.assert_array_equal(batch["inputs"][0, :n], expected["tokens"])
  np.testing.assert_array_equal(batch["loss_mask"][0, :n - 1],
                                expected["loss_mask"][1:])


# -- order, epochs and sharding ------------------------------------------------


def test_shuffle_is_seeded_and_differs_per_epoch(tokenizer):
  n = 16
  run = lambda seed: _ids(
      list(_make(_examples(n), tokenizer, seed=seed, num_epochs=2)), tokenizer)
  a, b, c = run(1), run(1), run(2)
  assert a == b
  assert a != c
  first, second = a[:n], a[n:]
  assert sorted(first) == sorted(second) == list(range(n))
  assert first != second
  assert first != list(range(n))


def test_no_shuffle_reads_in_order(tokenizer):
  ids = _ids(list(_make(_examples(8), tokenizer, shuffle=False,
                        num_epochs=2)), tokenizer)
  assert ids == list(range(8)) * 2


def test_identical_batches_for_the_same_seed(tokenizer):
  a = _take(iter(_make(_examples(20), tokenizer, pack=True, seed=3)), 6)
  b = _take(iter(_make(_examples(20), tokenizer, pack=True, seed=3)), 6)
  _assert_batches_equal(a, b)


@pytest.mark.parametrize("pack", [False, True])
def test_two_processes_cover_every_example_once(tokenizer, pack):
  n, per_process = 22, {}
  for index in range(2):
    ds = _make(_examples(n), tokenizer, pack=pack, process_index=index,
               process_count=2, global_batch_size=4, num_epochs=1,
               drop_remainder=False, seed=5)
    batches = list(ds)
    assert all(b["inputs"].shape == (2, 64) for b in batches)
    per_process[index] = _ids(batches, tokenizer)
  a, b = per_process[0], per_process[1]
  assert len(a) == len(set(a)) and len(b) == len(set(b))
  assert not set(a) & set(b)
  assert sorted(a + b) == list(range(n))


def test_shard_bounds_are_disjoint_and_even():
  for n, p in [(10, 3), (9, 3), (7, 4), (5, 1)]:
    for drop in (True, False):
      bounds = [pipeline.shard_bounds(n, i, p, drop) for i in range(p)]
      covered = [j for start, stop in bounds for j in range(start, stop)]
      assert len(covered) == len(set(covered))
      sizes = {stop - start for start, stop in bounds}
      if drop:
        assert sizes == {n // p} and len(covered) == n // p * p
      else:
        assert sorted(covered) == list(range(n))
        assert max(sizes) - min(sizes) <= 1


def test_drop_remainder_false_pads_the_last_batch(tokenizer):
  batches = list(_make(_examples(6), tokenizer, num_epochs=1,
                       drop_remainder=False))
  assert len(batches) == 2
  last = batches[-1]
  assert last["inputs"].shape == (4, 64)
  assert (last["segment_ids"][2:] == 0).all()
  assert not last["loss_mask"][2:].any()
  assert len(list(_make(_examples(6), tokenizer, num_epochs=1))) == 1


# -- iterator state ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["padded", "packed", "packed_2x_bins"])
@pytest.mark.parametrize("skip", [1, 4], ids=["mid_epoch", "across_epoch"])
def test_restored_iterator_continues_identically(tokenizer, mode, skip):
  # Padded: 12 examples, 4 per batch, 3 batches per epoch, so restoring after
  # 1 batch is mid-epoch and the 7 batches after 4 cross two epoch ends.
  # Packed (2-3 sequences per row): about one batch per epoch, and with twice
  # as many bins as rows the state also lands inside a packed group of rows.
  kwargs = {"padded": {},
            "packed": dict(pack=True, seq_len=128),
            "packed_2x_bins": dict(pack=True, seq_len=128,
                                   num_packing_bins=8)}[mode]
  make = lambda: _make(_examples(12), tokenizer, seed=7, **kwargs)
  original = pipeline.make_iterator(make())
  _take(original, skip)
  state = json.loads(json.dumps(original.get_state()))
  expected = _take(original, 7)
  if mode != "padded":
    assert max(int(b["segment_ids"].max()) for b in expected) >= 2
  if mode == "packed_2x_bins" and skip == 1:
    assert state["next_row"] == 4
  # A fresh dataset (as after a restart) and set_state ...
  restored = pipeline.make_iterator(make(), state=state)
  _assert_batches_equal(_take(restored, 7), expected)
  # ... and set_state on an iterator that had already moved on.
  moved = pipeline.make_iterator(make())
  _take(moved, 2)
  moved.set_state(state)
  _assert_batches_equal(_take(moved, 7), expected)


# -- long sequences ------------------------------------------------------------


def test_long_target_is_truncated_and_counted(tokenizer):
  ex = {"prompt": "Question 0: say yes many times.", "target": "Yes. " * 60}
  stats = pipeline.TruncationStats()
  batch = next(iter(_make([ex] * 4, tokenizer, stats=stats, shuffle=False)))
  full = sft.tokenize_sft_example(tokenizer, ex["prompt"], ex["target"])
  assert len(full["tokens"]) > 64
  np.testing.assert_array_equal(batch["inputs"][0], full["tokens"][:64])
  assert (batch["segment_ids"] == 1).all()
  assert batch["loss_mask"][0, -1] == 0 and batch["targets"][0, -1] == 0
  np.testing.assert_array_equal(batch["loss_mask"][0, :-1],
                                full["loss_mask"][1:64])
  assert stats.as_dict()["truncated"] >= 4
  assert stats.dropped == 0


def test_overlong_prompt_is_dropped_with_a_warning(tokenizer, caplog):
  long_prompt = {"prompt": "Question 99: " + "what is 1 plus 1? " * 20,
                 "target": "2"}
  examples = [long_prompt] + _examples(8)
  stats = pipeline.TruncationStats()
  with caplog.at_level(logging.WARNING, logger=pipeline.__name__):
    batches = list(_make(examples, tokenizer, num_epochs=1, shuffle=False,
                         stats=stats))
  assert _ids(batches, tokenizer) == list(range(8))
  assert stats.dropped == 1
  assert "Dropped an SFT example" in caplog.text


@pytest.mark.parametrize("target_words", [2, 40])
def test_cut_left_keeps_bos_and_the_newest_prompt_tokens(tokenizer,
                                                         target_words):
  """long_prompts='cut_left': the oldest prompt tokens go, BOS and the
  whole target stay (a target longer than seq_len // 2 leaves the prompt
  seq_len // 2 tokens and loses its own end); nothing is dropped."""
  ex = {"prompt": [("user", "Question 7: " + "what is 1 plus 1? " * 20),
                   ("model", "<math_exp> 1+1 </math_exp>"),
                   ("user", "1+1 -> 2")],
        "target": " ".join(["Yes."] * target_words)}
  full = sft.tokenize_sft_example(tokenizer, ex["prompt"], ex["target"])
  num_context = int(np.argmax(full["loss_mask"] > 0))
  num_target = len(full["tokens"]) - num_context
  assert num_context > 64
  stats = pipeline.TruncationStats()
  batch = next(iter(_make([ex] * 4, tokenizer, stats=stats, shuffle=False,
                          long_prompts="cut_left")))
  room = max(64 - num_target, 32)
  expected = np.concatenate([full["tokens"][:1],
                             full["tokens"][num_context - room + 1:]])[:64]
  n = min(len(expected), 64)
  np.testing.assert_array_equal(batch["inputs"][0, :n], expected[:n])
  assert batch["inputs"][0, 0] == tokenizer.bos_id
  supervised = batch["targets"][0][batch["loss_mask"][0] == 1]
  if room + num_target <= 64:  # the whole target and <end_of_turn> stay
    assert tokenizer.decode(supervised) == ex["target"] + tok.END_OF_TURN
    assert stats.truncated == 0
  else:
    assert len(supervised) == 64 - room and stats.truncated >= 4
  assert stats.context_cut >= 4 and stats.dropped == 0
  with pytest.raises(ValueError, match="long_prompts must be one of"):
    _make([ex], tokenizer, long_prompts="left")


@pytest.mark.parametrize("num_threads", [0, 2])
def test_all_prompts_too_long_raises(tokenizer, num_threads):
  ex = {"prompt": "Question 1: " + "what is 1 plus 1? " * 20, "target": "2"}
  with pytest.raises(ValueError, match="All 3 examples .* every one is "
                     "dropped"):
    next(iter(_make([ex] * 3, tokenizer, num_threads=num_threads)))


def test_one_usable_example_among_dropped_ones_is_enough(tokenizer):
  bad = {"prompt": "Question 1: " + "what is 1 plus 1? " * 20, "target": "2"}
  examples = [bad] * 5 + [_example(3)]
  batches = _take(iter(_make(examples, tokenizer, num_threads=4)), 3)
  assert _ids(batches, tokenizer) == [3] * 12


# -- errors --------------------------------------------------------------------


def test_indivisible_batch_size_names_both_numbers(tokenizer):
  with pytest.raises(ValueError, match=r"global_batch_size=6 .*"
                     r"process_count=4"):
    _make(_examples(8), tokenizer, global_batch_size=6, process_count=4)


def test_empty_dataset_is_an_error(tokenizer):
  with pytest.raises(ValueError, match="empty"):
    _make([], tokenizer)
  with pytest.raises(ValueError, match="3 examples, too few for "
                     "process_count=4"):
    _make(_examples(3), tokenizer, process_count=4, process_index=3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(seq_len=1), "seq_len must be an int >= 2, got 1"),
    (dict(global_batch_size=0), "global_batch_size must be a positive int"),
    (dict(num_epochs=0), r"num_epochs must be a positive int or None .*got 0"),
    (dict(process_index=2, process_count=2), "process_index=2 is outside"),
])
def test_bad_arguments_are_named(tokenizer, kwargs, match):
  with pytest.raises(ValueError, match=match):
    _make(_examples(8), tokenizer, **kwargs)


def test_accepts_a_grain_map_dataset(tokenizer):
  source = grain.MapDataset.source(_examples(8))
  ids = _ids(list(_make(source, tokenizer, shuffle=False, num_epochs=1)),
             tokenizer)
  assert ids == list(range(8))


# -- benchmark helper ----------------------------------------------------------


def test_measure_batches_per_second(tokenizer):
  it = pipeline.make_iterator(_make(_examples(16), tokenizer))
  assert pipeline.measure_batches_per_second(it, 5) > 0
  finite = pipeline.make_iterator(_make(_examples(8), tokenizer,
                                        num_epochs=1))
  with pytest.raises(ValueError, match="ended after 2 batches"):
    pipeline.measure_batches_per_second(finite, 5)
