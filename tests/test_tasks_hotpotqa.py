"""Tests of swirl_jax.tasks.hotpotqa: loaders, knowledge base, verifier."""

import json

import pytest

from swirl_jax.tasks import base
from swirl_jax.tasks import hotpotqa
from swirl_jax.tools import search

TASK = hotpotqa.HotpotQATask()

HOTPOT = [{
    "_id": "5a8b57f25542995d1e6f1371",
    "question": "Were Scott Derrickson and Ed Wood of the same nationality?",
    "answer": "yes",
    "type": "comparison",
    "level": "hard",
    "supporting_facts": [["Scott Derrickson", 0], ["Ed Wood", 0]],
    "context": [
        ["Scott Derrickson", ["Scott Derrickson (born July 16, 1966) is an "
                              "American director.", " He lives in LA."]],
        ["Ed Wood", ["Edward Davis Wood Jr. was an American filmmaker."]],
    ],
}]

MUSIQUE = [{
    "id": "2hop__1_2",
    "question": "Who is the spouse of the Green performer?",
    "answer": "Miquette Giraudy",
    "answer_aliases": ["Miquette"],
    "answerable": True,
    "paragraphs": [
        {"idx": 0, "title": "Green (album)",
         "paragraph_text": "Green is an album by Steve Hillage.",
         "is_supporting": True},
        {"idx": 1, "title": "Steve Hillage",
         "paragraph_text": "Hillage's partner is Miquette Giraudy.",
         "is_supporting": True},
        {"idx": 2, "title": "Other", "paragraph_text": "Unrelated.",
         "is_supporting": False},
    ],
    "question_decomposition": [],
}]

BEERQA = {"version": "1.0", "split": "dev", "data": [{
    "id": "b1", "src": "hotpotqa",
    "question": "What is the capital of the country of Lyon?",
    "answers": ["Paris", "Paris, France"],
    "context": [["Lyon", ["Lyon is a city in France."]],
                ["France", ["The capital of France is Paris."]]],
}]}


def test_normalize_and_f1():
  assert hotpotqa.normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
  assert hotpotqa.normalize_answer("An apple, a pear") == "apple pear"
  assert hotpotqa.token_f1("the big cat", "big cat") == 1.0
  assert hotpotqa.token_f1("big dog", "big cat") == pytest.approx(0.5)
  assert hotpotqa.token_f1("yes", "no") == 0.0
  assert hotpotqa.token_f1("no it is", "no") == 0.0


def test_load_hotpotqa(tmp_path):
  path = tmp_path / "hotpot_dev_distractor_v1.json"
  path.write_text(json.dumps(HOTPOT))
  (ex,) = TASK.load(str(path), split="validation")
  assert ex.id == HOTPOT[0]["_id"] and ex.answer == "yes"
  assert ex.metadata["type"] == "comparison"
  assert ex.metadata["level"] == "hard"
  assert ex.metadata["supporting_facts"] == [["Scott Derrickson", 0],
                                             ["Ed Wood", 0]]
  assert ex.metadata["split"] == "validation"
  assert TASK.verify(ex, "Yes.").correct
  articles = TASK.corpus([ex])
  assert articles[0] == search.Article(
      "Scott Derrickson", "Scott Derrickson (born July 16, 1966) is an "
      "American director. He lives in LA.")
  assert [a.title for a in articles] == ["Scott Derrickson", "Ed Wood"]


def test_load_musique(tmp_path):
  path = tmp_path / "musique_ans_v1.0_dev.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in MUSIQUE))
  (ex,) = TASK.load(str(path))
  assert ex.id == "2hop__1_2"
  assert ex.metadata["aliases"] == ["Miquette"]
  assert ex.metadata["supporting_facts"] == [["Green (album)", 0],
                                             ["Steve Hillage", 0]]
  assert TASK.verify(ex, "miquette").correct          # alias
  assert TASK.verify(ex, "Miquette Giraudy").correct
  assert len(TASK.corpus([ex])) == 3


def test_load_beerqa(tmp_path):
  path = tmp_path / "beerqa_dev_v1.0.json"
  path.write_text(json.dumps(BEERQA))
  (ex,) = TASK.load(str(path))
  assert ex.answer == "Paris" and ex.metadata["aliases"] == ["Paris, France"]
  assert TASK.verify(ex, "Paris, France").correct
  tool = search.SearchTool(TASK.corpus([ex]))
  assert tool.execute("capital of France").startswith("France:")


def test_load_errors(tmp_path):
  bad = [HOTPOT[0], dict(HOTPOT[0], context=[["title only"]])]
  path = tmp_path / "h.json"
  path.write_text(json.dumps(bad))
  with pytest.raises(base.DataFormatError,
                     match=r"h\.json\[record 1\]: context\[0\]"):
    TASK.load(str(path))
  unlabelled = dict(HOTPOT[0])
  del unlabelled["answer"]
  path.write_text(json.dumps([unlabelled]))
  with pytest.raises(base.DataFormatError, match="no 'answer'"):
    TASK.load(str(path))
  bad_musique = dict(MUSIQUE[0], paragraphs=[{"idx": 0, "title": "t"}])
  jl = tmp_path / "m.jsonl"
  jl.write_text(json.dumps(MUSIQUE[0]) + "\n" + json.dumps(bad_musique) + "\n")
  with pytest.raises(base.DataFormatError,
                     match=r"m\.jsonl:2 paragraphs\[0\]: missing field "
                           r"'paragraph_text'"):
    TASK.load(str(jl))
  beer = tmp_path / "b.json"
  beer.write_text(json.dumps({"data": [dict(BEERQA["data"][0], answers=[])]}))
  with pytest.raises(base.DataFormatError, match=r"b\.json\[data 0\]"):
    TASK.load(str(beer))
  other = tmp_path / "o.json"
  other.write_text(json.dumps({"rows": []}))
  with pytest.raises(base.DataFormatError, match="not HotPotQA"):
    TASK.load(str(other))


def test_knowledge_base_is_deterministic_and_unambiguous():
  kb = hotpotqa.build_knowledge_base(0, 60)
  hotpotqa.build_knowledge_base.cache_clear()
  assert hotpotqa.build_knowledge_base(0, 60).articles() == kb.articles()
  assert hotpotqa.build_knowledge_base(1, 60).articles() != kb.articles()
  titles = [a.title for a in kb.articles()]
  assert len(titles) == len(set(titles))
  # No word of one name appears in another name (except company suffixes).
  words = {}
  for t in titles:
    for w in set(t.lower().split()) - hotpotqa._SHARED_WORDS:
      assert w not in words, (t, words.get(w))
      words[w] = t
  for country in kb.countries.values():
    assert country["capital"] in country["cities"]


def test_generate_deterministic_disjoint_and_multi_hop():
  a = TASK.generate(80, seed=0, split="train")
  assert a == TASK.generate(80, seed=0, split="train")
  test = TASK.generate(30, seed=0, split="test")
  test2 = TASK.generate(30, seed=7, split="test")
  train2 = TASK.generate(120, seed=7, split="train")
  assert not ({e.id for e in a + train2} & {e.id for e in test + test2})
  assert not ({e.question for e in a + train2} &
              {e.question for e in test + test2})
  hops = {e.metadata["hops"] for e in a}
  assert hops == {2, 3, 4}


def test_generate_has_enough_held_out_questions_for_large_evaluations():
  # The knowledge base grows with the split's share: 400 distinct test
  # questions (an evaluation of the size the quickstarts report), not only
  # as many as a train-sized knowledge base of 400 people happens to hold.
  for split, n in (("test", 400), ("validation", 150)):
    examples = TASK.generate(n, seed=3, split=split)
    assert len({e.question for e in examples}) == n
    assert {e.metadata["split"] for e in examples} == {split}


def test_questions_are_answerable_by_chained_search():
  examples = TASK.generate(60, seed=2, split="train")
  articles = TASK.corpus(examples)
  assert articles == hotpotqa.corpus(2, 60)
  tool = search.SearchTool(articles)
  for ex in examples:
    path = ex.metadata["path"]
    assert len(path) == ex.metadata["hops"] >= 2
    # The question names only the first entity of the chain.
    assert path[0] in ex.question
    assert not any(t in ex.question for t in path[1:])
    # Each hop's article names the next entity; the last names the answer.
    for here, nxt in zip(path, path[1:] + [ex.answer]):
      result = tool.execute(here)
      assert result.startswith(here + ":"), (here, result)
      assert nxt in result, (ex.question, here, nxt)
    # No earlier article of the chain gives the answer away.
    texts = {a.title: a.text for a in articles}
    assert not any(ex.answer in texts[t] for t in path[:-1])


def test_corpus_of_mixed_examples(tmp_path):
  path = tmp_path / "h.json"
  path.write_text(json.dumps(HOTPOT))
  loaded = TASK.load(str(path))
  generated = TASK.generate(3, seed=0)
  arts = TASK.corpus(loaded + generated + generated)
  assert len(arts) == 2 + len(hotpotqa.corpus(0, 50))


def test_prompt_parse_and_verify():
  ex = TASK.generate(1, seed=0)[0]
  p = TASK.prompt(ex)
  assert "make up to 5 sequential queries" in p and p.endswith(ex.question)
  assert TASK.parse_answer(f"<answer> {ex.answer} </answer>") == ex.answer
  assert TASK.parse_answer("So the answer is Paris.") == "Paris"
  assert TASK.parse_answer("<search_query> x </search_query>") is None
  v = TASK.verify(ex, f"the {ex.answer}!")
  assert v.correct and v.category == "correct" and v.score == 1.0
  gold = base.Example("q", "?", "Steve Hillage", {"aliases": []})
  v = TASK.verify(gold, "Hillage")
  assert not v.correct and v.category == "wrong_answer"
  assert v.score == pytest.approx(2 / 3)
  assert "f1=0.67" in v.detail
  assert TASK.verify(gold, None).category == "no_answer"
  assert TASK.verify(gold, " the ").category == "no_answer"
