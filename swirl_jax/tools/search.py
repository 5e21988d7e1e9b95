"""BM25 search over a fixed set of articles: `<search_query> QUERY </search_query>`.

SWiRL retrieves the nearest article of the question's split with a dense
retriever; offline we use BM25 (the `bm25s` package) over title + text, with
lowercase word tokens and English stopwords removed. The index is built once
in the constructor. Ties are broken by article order, so results are
deterministic.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Iterable, Mapping, Sequence, Union

from swirl_jax.tools import base
from swirl_jax.tools.base import truncate

_WORD_RE = re.compile(r"[^\W_]+", re.UNICODE)


@dataclasses.dataclass(frozen=True)
class Article:
  """One retrievable document."""

  title: str
  text: str

  def render(self) -> str:
    return f"{self.title}: {self.text}"


ArticleLike = Union[Article, Mapping[str, str], Sequence[str]]


def _to_article(item: ArticleLike, index: int) -> Article:
  if isinstance(item, Article):
    return item
  if isinstance(item, Mapping):
    if "title" not in item or "text" not in item:
      raise ValueError(
          f"Article {index} needs 'title' and 'text' keys, got {sorted(item)}.")
    return Article(str(item["title"]), str(item["text"]))
  if isinstance(item, (tuple, list)) and len(item) == 2:
    return Article(str(item[0]), str(item[1]))
  raise ValueError(f"Article {index} must be an Article, a mapping or a "
                   f"(title, text) pair, got {type(item).__name__}.")


def _stopwords() -> frozenset[str]:
  from bm25s import stopwords  # pylint: disable=import-outside-toplevel
  return frozenset(stopwords.STOPWORDS_EN)


def tokenize(text: str, stopwords: frozenset[str] = frozenset()) -> list[str]:
  """Lowercase word tokens of `text` (letters and digits), minus `stopwords`."""
  return [t for t in _WORD_RE.findall(text.lower()) if t not in stopwords]


@base.register_tool("search")
class SearchTool(base.Tool):
  """BM25 retrieval of the best-matching article for a query.

  Attributes:
    articles: the corpus, in the order given (earlier articles win ties).
    max_chars: `execute` returns at most this many characters.
  """

  tag = "search_query"

  def __init__(self, articles: Iterable[ArticleLike] = (), max_chars: int = 500,
               k1: float = 1.5, b: float = 0.75):
    if not isinstance(max_chars, int) or max_chars < 4:
      raise ValueError(f"max_chars must be an int >= 4, got {max_chars!r}.")
    self.articles: tuple[Article, ...] = tuple(
        _to_article(a, i) for i, a in enumerate(articles))
    self.max_chars = max_chars
    self._stopwords = _stopwords()
    self._retriever = None
    docs = [tokenize(f"{a.title} {a.text}", self._stopwords) for a in self.articles]
    if any(docs):
      import bm25s  # pylint: disable=import-outside-toplevel
      # bm25s sets its own logger to DEBUG; keep index building quiet.
      logging.getLogger("bm25s").setLevel(logging.WARNING)
      self._retriever = bm25s.BM25(k1=k1, b=b)
      self._retriever.index(docs, show_progress=False)

  def describe(self) -> str:
    return ("<search_query> QUERY </search_query>: returns the best-matching "
            "article (title: text) for a keyword query.")

  def search(self, query: str, k: int = 1) -> list[tuple[Article, float]]:
    """Up to `k` (article, score) pairs with a positive BM25 score, best first.

    Equal scores keep corpus order.
    """
    if not isinstance(k, int) or k < 1:
      raise ValueError(f"k must be a positive int, got {k!r}.")
    if self._retriever is None or not isinstance(query, str):
      return []
    vocab = self._retriever.vocab_dict
    tokens = [t for t in tokenize(query, self._stopwords) if t in vocab]
    if not tokens:
      return []
    import numpy as np  # pylint: disable=import-outside-toplevel
    scores = np.asarray(self._retriever.get_scores(tokens), dtype=np.float64)
    order = np.lexsort((np.arange(len(scores)), -scores))   # score desc, index asc
    return [(self.articles[i], float(scores[i])) for i in order[:k] if scores[i] > 0]

  def execute(self, call: str) -> str:
    query = call.strip() if isinstance(call, str) else ""
    if not self.articles:
      return f"{base.ERROR_PREFIX} the search corpus is empty."
    if not query:
      return f"{base.ERROR_PREFIX} empty search query."
    if not tokenize(query, self._stopwords):
      return f"{base.ERROR_PREFIX} the query {query!r} has no searchable words."
    hits = self.search(query, k=1)
    if not hits:
      return f"No article matches the query {query!r}."
    return truncate(hits[0][0].render(), self.max_chars)
