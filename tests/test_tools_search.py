"""Tests for swirl_jax.tools.search: BM25 retrieval, truncation, empty cases."""

import pytest

from swirl_jax.tools import base
from swirl_jax.tools.search import Article, SearchTool, tokenize, truncate

ARTICLES = [
    Article("Paris", "Paris is the capital and most populous city of France, on the "
            "river Seine."),
    Article("Berlin", "Berlin is the capital and largest city of Germany by both area "
            "and population."),
    Article("Mount Everest", "Mount Everest is Earth's highest mountain above sea "
            "level, located in the Mahalangur Himal sub-range of the Himalayas."),
    Article("Marie Curie", "Marie Curie was a Polish and naturalised-French physicist "
            "and chemist who conducted pioneering research on radioactivity. She was "
            "the first woman to win a Nobel Prize."),
    Article("Python (programming language)", "Python is a high-level, general-purpose "
            "programming language created by Guido van Rossum."),
    Article("Amazon River", "The Amazon River in South America is the largest river by "
            "discharge volume of water in the world."),
]


@pytest.fixture(scope="module")
def tool():
  return SearchTool(ARTICLES, max_chars=500)


@pytest.mark.parametrize("query, title", [
    ("capital of France", "Paris"),
    ("largest city in Germany", "Berlin"),
    ("highest mountain on Earth", "Mount Everest"),
    ("who won a Nobel Prize for radioactivity research", "Marie Curie"),
    ("Guido van Rossum programming language", "Python (programming language)"),
    ("largest river by discharge", "Amazon River"),
    ("EVEREST", "Mount Everest"),
    ("Himalayas!!!", "Mount Everest"),
])
def test_clear_queries_find_the_right_article(tool, query, title):
  assert tool.search(query, k=1)[0][0].title == title
  assert tool.execute(query).startswith(f"{title}: ")


def test_execute_returns_title_and_text(tool):
  assert tool.execute("river Seine") == f"Paris: {ARTICLES[0].text}"


def test_search_ranks_and_scores(tool):
  hits = tool.search("capital city", k=3)
  assert [a.title for a, _ in hits][:2] == ["Paris", "Berlin"] or \
      [a.title for a, _ in hits][:2] == ["Berlin", "Paris"]
  scores = [s for _, s in hits]
  assert scores == sorted(scores, reverse=True)
  assert all(s > 0 for s in scores)
  assert len(tool.search("capital", k=10)) == 2   # only positive scores


def test_truncation():
  long_text = "word " * 500
  tool = SearchTool([Article("Long", long_text)], max_chars=50)
  result = tool.execute("word")
  assert len(result) <= 50
  assert result.endswith("...")
  assert result.startswith("Long: word")
  assert truncate("abc", 10) == "abc"
  assert truncate("abcdefghij", 10) == "abcdefghij"
  assert truncate("abcdefghijk", 10) == "abcdefg..."


def test_empty_cases(tool):
  assert SearchTool([]).execute("anything").startswith("Error:")
  assert SearchTool([]).search("anything") == []
  assert tool.execute("").startswith("Error:")
  assert tool.execute("   \n").startswith("Error:")
  assert tool.execute("the of and").startswith("Error:")   # only stopwords
  assert tool.run(None).startswith("Error:")               # type: ignore[arg-type]
  result = tool.execute("zzyzx qwerty")
  assert not result.startswith("Error:") and "No article" in result
  assert tool.search("zzyzx") == []


def test_deterministic_tie_breaking():
  twins = [Article("First", "alpha beta gamma"), Article("Second", "alpha beta gamma"),
           Article("Third", "delta")]
  tool = SearchTool(twins)
  for _ in range(3):
    hits = tool.search("alpha", k=3)
    assert [a.title for a, _ in hits] == ["First", "Second"]
    assert hits[0][1] == hits[1][1]
  reversed_tool = SearchTool(list(reversed(twins)))
  assert reversed_tool.search("alpha")[0][0].title == "Second"


def test_article_inputs_and_validation():
  tool = SearchTool([{"title": "A", "text": "apples are red"}, ("B", "bananas are yellow")])
  assert tool.execute("yellow bananas") == "B: bananas are yellow"
  with pytest.raises(ValueError, match="Article 0"):
    SearchTool([{"name": "x"}])
  with pytest.raises(ValueError, match="max_chars"):
    SearchTool([], max_chars=0)
  with pytest.raises(ValueError, match="k must be"):
    tool.search("apples", k=0)


def test_tokenize():
  assert tokenize("Hello, World! It's 2024.") == ["hello", "world", "it", "s", "2024"]
  assert tokenize("the cat", frozenset({"the"})) == ["cat"]


def test_registry_and_call_format():
  tool = base.get_tool("search", articles=ARTICLES, max_chars=60)
  assert tool.tag == "search_query" and "search_query" in tool.describe()
  call = base.parse_call("I will search. <search_query> capital of Germany "
                         "</search_query>", [tool])
  assert call.name == "search"
  result = tool.run(call.content)
  assert result.startswith("Berlin: ") and len(result) <= 60
  assert base.format_call(tool.tag, "x") == "<search_query> x </search_query>"
