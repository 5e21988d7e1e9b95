"""Multi-hop question answering with the search tool (HotPotQA, MuSiQue,
BeerQA, and a synthetic knowledge base).

Loaders (`load(path)` picks by content):

* HotPotQA json: a list of {_id, question, answer, type, level,
  supporting_facts: [[title, sent_id]], context: [[title, [sentences]]]}.
* MuSiQue jsonl: {id, question, answer, answer_aliases, paragraphs:
  [{idx, title, paragraph_text, is_supporting}], ...} per line.
* BeerQA json: {"data": [{id, question, answers, context: [[title,
  [sentences]]]}]}.

The context paragraphs of loaded examples are kept in metadata and become
the search corpus (`corpus(examples)`), as in SWiRL, where a question's
retrieval runs over its split's articles.

`generate(n, seed, split)` builds a seeded knowledge base of invented
countries, cities, companies and people, renders every entity as a short
encyclopedia article (the search corpus: `corpus(examples)` or
`corpus(seed)`), and asks 2-4 hop questions whose answer needs a chain of
lookups (e.g. person -> birth city -> country -> capital). Articles never
state a multi-hop fact directly.

Verification: SQuAD-style normalisation (lowercase, no punctuation, no
articles, single spaces) and exact match against the gold answer or any
alias; the best token F1 is reported in `Verdict.score`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import os
import random
import re
import string
from typing import Any, Iterator, Optional, Sequence, Union

from swirl_jax.tasks import answers as answers_lib
from swirl_jax.tasks import base
from swirl_jax.tasks import prompts
from swirl_jax.tools import search as search_lib

Article = search_lib.Article

HOTPOTQA = "hotpotqa"
MUSIQUE = "musique"
BEERQA = "beerqa"
SYNTHETIC = "synthetic"

# ----------------------------------------------------------------------------
# SQuAD-style answer normalisation.

_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCT = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
  """Lowercase, drop punctuation and articles, collapse whitespace."""
  text = str(text).lower()
  text = "".join(c for c in text if c not in _PUNCT)
  text = _ARTICLES_RE.sub(" ", text)
  return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
  """SQuAD token F1 between two answers (after normalisation)."""
  pred = normalize_answer(prediction).split()
  ref = normalize_answer(gold).split()
  # yes / no / noanswer must match exactly.
  special = ("yes", "no", "noanswer")
  if (" ".join(pred) in special or " ".join(ref) in special) and pred != ref:
    return 0.0
  common = collections.Counter(pred) & collections.Counter(ref)
  same = sum(common.values())
  if same == 0:
    return 0.0
  precision, recall = same / len(pred), same / len(ref)
  return 2 * precision * recall / (precision + recall)


# ----------------------------------------------------------------------------
# Loaders.


def _context_pairs(context: Any, where: str) -> list[list[Any]]:
  if not isinstance(context, list):
    raise base.DataFormatError(f"{where}: 'context' must be a list of "
                               "[title, [sentences]] pairs")
  out = []
  for j, item in enumerate(context):
    if (not isinstance(item, (list, tuple)) or len(item) != 2 or
        not isinstance(item[0], str)):
      raise base.DataFormatError(
          f"{where}: context[{j}] must be [title, [sentences]], got "
          f"{str(item)[:80]!r}")
    sentences = item[1]
    if isinstance(sentences, str):
      sentences = [sentences]
    if not isinstance(sentences, list) or not all(
        isinstance(s, str) for s in sentences):
      raise base.DataFormatError(
          f"{where}: context[{j}] sentences must be a list of strings")
    out.append([item[0], list(sentences)])
  return out


def _hotpotqa_example(rec: Any, where: str, split: str) -> base.Example:
  id_ = base.require(rec, "_id", str, where)
  question = base.require(rec, "question", str, where)
  if "answer" not in rec:
    raise base.DataFormatError(
        f"{where}: no 'answer' (an unlabelled HotPotQA test file?); only "
        "labelled files can be graded")
  answer = base.require(rec, "answer", str, where)
  context = _context_pairs(base.require(rec, "context", list, where), where)
  facts = rec.get("supporting_facts", [])
  if not isinstance(facts, list) or not all(
      isinstance(f, (list, tuple)) and len(f) == 2 for f in facts):
    raise base.DataFormatError(
        f"{where}: 'supporting_facts' must be a list of [title, sent_id]")
  return base.Example(
      id=id_, question=question, answer=answer,
      metadata={"split": split, "source": HOTPOTQA,
                "type": rec.get("type", ""), "level": rec.get("level", ""),
                "supporting_facts": [list(f) for f in facts],
                "context": context, "aliases": []})


def _musique_example(rec: Any, where: str, split: str) -> base.Example:
  id_ = base.require(rec, "id", str, where)
  question = base.require(rec, "question", str, where)
  answer = base.require(rec, "answer", str, where)
  aliases = rec.get("answer_aliases") or []
  paragraphs = base.require(rec, "paragraphs", list, where)
  context, supporting = [], []
  for j, p in enumerate(paragraphs):
    pw = f"{where} paragraphs[{j}]"
    title = base.require(p, "title", str, pw)
    text = base.require(p, "paragraph_text", str, pw)
    context.append([title, [text]])
    if p.get("is_supporting"):
      supporting.append([title, 0])
  return base.Example(
      id=id_, question=question, answer=answer,
      metadata={"split": split, "source": MUSIQUE,
                "aliases": [str(a) for a in aliases],
                "answerable": bool(rec.get("answerable", True)),
                "supporting_facts": supporting, "context": context})


def _beerqa_example(rec: Any, where: str, split: str) -> base.Example:
  id_ = base.require(rec, "id", str, where)
  question = base.require(rec, "question", str, where)
  answers = base.require(rec, "answers", list, where)
  if not answers or not all(isinstance(a, str) for a in answers):
    raise base.DataFormatError(
        f"{where}: 'answers' must be a non-empty list of strings (an "
        "unlabelled BeerQA test file?)")
  context = _context_pairs(rec.get("context", []), where)
  return base.Example(
      id=id_, question=question, answer=answers[0],
      metadata={"split": split, "source": BEERQA, "aliases": answers[1:],
                "src": rec.get("src", ""), "context": context,
                "supporting_facts": []})


# ----------------------------------------------------------------------------
# Synthetic knowledge base.

_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m",
           "n", "p", "r", "s", "sh", "t", "th", "v", "z", "st", "tr", "j")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou", "ae")
_CODAS = ("", "", "n", "r", "l", "s", "m", "th", "x", "nd")
_CITY_SUFFIXES = ("port", "ford", "vale", "holm", "by", "stead", "mouth",
                  "wick", "gard", "ton")
_COUNTRY_SUFFIXES = ("ia", "land", "stan", "ora", "ovia", "mark", "esh")
_COMPANY_SUFFIXES = ("Industries", "Labs", "Foods", "Motors", "Systems",
                     "Textiles", "Aerospace", "Pharma", "Logistics",
                     "Robotics")
_INDUSTRIES = {"Industries": "manufacturing", "Labs": "research",
               "Foods": "food", "Motors": "automotive", "Systems": "software",
               "Textiles": "textile", "Aerospace": "aerospace",
               "Pharma": "pharmaceutical", "Logistics": "shipping",
               "Robotics": "robotics"}
_PROFESSIONS = ("engineer", "chemist", "economist", "architect", "designer",
                "geologist", "accountant", "pilot", "surgeon", "lawyer",
                "botanist", "statistician")
_CURRENCY_UNITS = ("crown", "mark", "dinar", "florin", "shilling", "real",
                   "talent", "dram")


_SHARED_WORDS = frozenset(s.lower() for s in _COMPANY_SUFFIXES)


def _word(rng: random.Random, syllables: int) -> str:
  parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS)
           for _ in range(syllables)]
  return ("".join(parts) + rng.choice(_CODAS)).capitalize()


@dataclasses.dataclass
class KnowledgeBase:
  """An invented world: entity attributes and their articles.

  Attributes:
    seed / num_people: what rebuilds it (`build_knowledge_base`).
    countries: name -> {'capital', 'currency', 'cities'}.
    cities: name -> {'country', 'population'}.
    companies: name -> {'founder', 'hq', 'year', 'industry'}.
    people: name -> {'birth_city', 'birth_year', 'employer', 'profession'}.
  """

  seed: int
  num_people: int
  countries: dict[str, dict[str, Any]]
  cities: dict[str, dict[str, Any]]
  companies: dict[str, dict[str, Any]]
  people: dict[str, dict[str, Any]]

  def articles(self) -> list[Article]:
    """One article per entity: countries, cities, companies, people."""
    out = []
    for name, c in self.countries.items():
      others = [x for x in c["cities"] if x != c["capital"]][:3]
      text = (f"{name} is a country. Its capital is {c['capital']}. Its "
              f"currency is the {c['currency']}.")
      if others:
        text += " Other cities of " + name + " include " + ", ".join(
            others) + "."
      out.append(Article(name, text))
    for name, c in self.cities.items():
      out.append(Article(name, (
          f"{name} is a city in {c['country']}, with a population of "
          f"{c['population']:,}.")))
    for name, c in self.companies.items():
      article = "an" if c["industry"][0] in "aeiou" else "a"
      out.append(Article(name, (
          f"{name} is {article} {c['industry']} company founded in "
          f"{c['year']} by {c['founder']}. Its headquarters are in "
          f"{c['hq']}.")))
    for name, p in self.people.items():
      article = "an" if p["profession"][0] in "aeiou" else "a"
      text = (f"{name} (born {p['birth_year']}) is {article} {p['profession']} "
              f"born in {p['birth_city']}. {name.split()[0]} works at "
              f"{p['employer']}.")
      out.append(Article(name, text))
    return out


@functools.lru_cache(maxsize=16)
def build_knowledge_base(seed: int, num_people: int) -> KnowledgeBase:
  """The knowledge base for (`seed`, `num_people`); deterministic, cached."""
  if num_people < 4:
    raise ValueError(f"num_people must be >= 4, got {num_people}")
  rng = random.Random(base.seed_for(seed, "hotpotqa-kb", num_people))
  used: set[str] = set()

  def fresh(make) -> str:
    for _ in range(1000):
      name = make()
      # Names must be unique and must not share a word with another name,
      # so that a query for one entity cannot retrieve another.
      words = set(name.lower().split()) - _SHARED_WORDS
      if name not in used and not any(w in used for w in words):
        used.add(name)
        used.update(words)
        return name
    raise RuntimeError("could not find a fresh entity name")

  n_countries = max(3, num_people // 12)
  n_cities = max(2 * n_countries, num_people // 3)
  n_companies = max(3, num_people // 3)

  countries = {}
  for _ in range(n_countries):
    name = fresh(lambda: _word(rng, 2) + rng.choice(_COUNTRY_SUFFIXES))
    currency = f"{_word(rng, 1).lower()} {rng.choice(_CURRENCY_UNITS)}"
    countries[name] = {"capital": None, "currency": currency, "cities": []}
  country_names = list(countries)
  cities = {}
  for i in range(n_cities):
    name = fresh(lambda: _word(rng, rng.randint(1, 2)) +
                 rng.choice(_CITY_SUFFIXES))
    # Every country gets at least two cities.
    country = (country_names[i % n_countries] if i < 2 * n_countries
               else rng.choice(country_names))
    cities[name] = {"country": country,
                    "population": rng.randint(8, 3000) * 1000 +
                                  rng.randint(0, 999)}
    countries[country]["cities"].append(name)
  for c in countries.values():
    c["capital"] = rng.choice(c["cities"])
  city_names = list(cities)

  people = {}
  for _ in range(num_people):
    name = fresh(lambda: f"{_word(rng, 2)} {_word(rng, 2)}")
    people[name] = {"birth_city": rng.choice(city_names),
                    "birth_year": rng.randint(1930, 1995),
                    "employer": None,
                    "profession": rng.choice(_PROFESSIONS)}
  person_names = list(people)
  companies = {}
  founders = rng.sample(person_names, n_companies)
  for founder in founders:
    suffix = rng.choice(_COMPANY_SUFFIXES)
    name = fresh(lambda: f"{_word(rng, 2)} {suffix}")
    companies[name] = {"founder": founder, "hq": rng.choice(city_names),
                       "year": rng.randint(1950, 2015),
                       "industry": _INDUSTRIES[suffix]}
    people[founder]["employer"] = name
  company_names = list(companies)
  for p in people.values():
    if p["employer"] is None:
      p["employer"] = rng.choice(company_names)
  return KnowledgeBase(seed=seed, num_people=num_people, countries=countries,
                       cities=cities, companies=companies, people=people)


def kb_questions(kb: KnowledgeBase) -> list[dict[str, Any]]:
  """Every multi-hop question the knowledge base supports.

  Each is {'question', 'answer', 'hops', 'template', 'path'} where 'path'
  lists the article titles of the lookup chain. Questions whose answer
  already appears in an earlier article of the chain are left out.
  """
  out = []
  texts = {a.title: a.text for a in kb.articles()}

  def add(template, question, answer, path):
    # Skip coincidences that let an earlier hop's article give the answer
    # away (e.g. a person born in their country's capital).
    if any(str(answer) in texts[t] for t in path[:-1]):
      return
    out.append({"question": question, "answer": str(answer),
                "hops": len(path), "template": template, "path": path})

  for p, a in kb.people.items():
    city = a["birth_city"]
    country = kb.cities[city]["country"]
    company = a["employer"]
    founder = kb.companies[company]["founder"]
    f_city = kb.people[founder]["birth_city"]
    f_country = kb.cities[f_city]["country"]
    add("person_birth_country", f"In which country was {p} born?", country,
        [p, city])
    add("capital_of_birth_country",
        f"What is the capital of the country where {p} was born?",
        kb.countries[country]["capital"], [p, city, country])
    if founder != p:
      add("employer_founder", f"Who founded the company that {p} works for?",
          founder, [p, company])
      add("employer_founder_birth_city",
          f"In which city was the founder of the company that {p} works "
          "for born?", f_city, [p, company, founder])
      add("employer_founder_birth_country",
          f"In which country was the founder of the company that {p} works "
          "for born?", f_country, [p, company, founder, f_city])
  for c, a in kb.companies.items():
    hq_country = kb.cities[a["hq"]]["country"]
    founder = a["founder"]
    f_city = kb.people[founder]["birth_city"]
    f_country = kb.cities[f_city]["country"]
    add("company_hq_country",
        f"In which country does {c} have its headquarters?", hq_country,
        [c, a["hq"]])
    add("founder_birth_year", f"In what year was the founder of {c} born?",
        kb.people[founder]["birth_year"], [c, founder])
    add("hq_country_currency",
        f"What is the currency of the country where {c} has its "
        "headquarters?", kb.countries[hq_country]["currency"],
        [c, a["hq"], hq_country])
    add("founder_country_currency",
        f"What currency is used in the country where the founder of {c} was "
        "born?", kb.countries[f_country]["currency"],
        [c, founder, f_city, f_country])
  return out


# ----------------------------------------------------------------------------
# The task.


@base.register_task("hotpotqa")
class HotpotQATask(base.Task):
  """Multi-hop QA with the SWiRL search prompt.

  Args:
    max_steps: the SWiRL step limit (5 for QA).
    num_people: size of generated knowledge bases (None: enough people for
      n questions of the split: max(50, n) for 'train', and for the smaller
      splits n / (3 x the split's share), e.g. 1.67 n for 'test' (20%),
      which the ~4.5 questions per person cover with room to spare).
    prompt_style: 'full' (the SWiRL prompt) or 'compact' (one line, for
      tiny models on a CPU).
  """

  name = "hotpotqa"
  tools = (prompts.SEARCH_TAG,)

  def __init__(self, max_steps: int = 5, num_people: Optional[int] = None,
               prompt_style: str = "full"):
    prompts.swirl_search_prompt("", style=prompt_style)  # validates
    self.prompt_style = prompt_style
    if max_steps < 1:
      raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    self.max_steps = max_steps
    self.num_people = num_people

  # -- loading ---------------------------------------------------------------

  def load(self, path: str, split: str = "test") -> list[base.Example]:
    """Reads HotPotQA json, MuSiQue jsonl or BeerQA json (detected)."""
    path = os.fspath(path)
    if base.is_jsonl(path):
      return [_musique_example(rec, f"{path}:{lineno}", split)
              for lineno, rec in base.read_jsonl(path)]
    data = base.read_json(path)
    if isinstance(data, list):
      return [_hotpotqa_example(rec, f"{path}[record {i}]", split)
              for i, rec in enumerate(data)]
    if isinstance(data, dict) and isinstance(data.get("data"), list):
      return [_beerqa_example(rec, f"{path}[data {i}]", split)
              for i, rec in enumerate(data["data"])]
    raise base.DataFormatError(
        f"{path}: not HotPotQA (a JSON list), BeerQA (an object with a 'data' "
        "list) or MuSiQue (a .jsonl file)")

  # -- generation ------------------------------------------------------------

  def generate(self, n: int, seed: int = 0,
               split: str = "train") -> list[base.Example]:
    base.check_split(split)
    num_people = self.num_people or max(
        50, n, math.ceil(n / (3 * base.split_share(split))))
    kb = build_knowledge_base(seed, num_people)
    questions = kb_questions(kb)
    random.Random(base.seed_for(seed, "hotpotqa-order", split)).shuffle(
        questions)

    def candidates() -> Iterator[tuple[str, base.Example]]:
      for q in questions:
        yield q["question"], base.Example(
            id=base.content_id("hotpotqa-gen", q["question"], q["answer"]),
            question=q["question"], answer=q["answer"],
            metadata={"source": SYNTHETIC, "hops": q["hops"],
                      "template": q["template"], "path": q["path"],
                      "aliases": [],
                      "kb": {"seed": seed, "num_people": num_people}})

    return base.take_split(candidates(), n, split, len(questions), self.name)

  # -- prompting and grading -------------------------------------------------

  def prompt(self, example: base.Example) -> str:
    return prompts.swirl_search_prompt(example.question, self.max_steps,
                                       self.prompt_style)

  def parse_answer(self, text: str) -> Optional[str]:
    tagged = answers_lib.extract_tagged(text, prompts.ANSWER_TAG)
    if tagged is not None or not text:
      return tagged
    found = re.findall(r"(?:final answer|the answer is)\s*:?\s*(.+)", text,
                       re.IGNORECASE)
    return found[-1].strip().rstrip(".") if found else None

  def verify(self, example: base.Example,
             answer: Optional[str]) -> base.Verdict:
    if answer is None or not normalize_answer(answer):
      return base.Verdict(False, base.NO_ANSWER, "no answer given", score=0.0)
    golds = [example.answer] + list(example.metadata.get("aliases", []))
    em = any(normalize_answer(answer) == normalize_answer(g) for g in golds)
    f1 = max(token_f1(answer, g) for g in golds)
    detail = f"em={int(em)} f1={f1:.2f} gold={example.answer!r}"
    if em:
      return base.Verdict(True, base.CORRECT, detail, score=1.0)
    return base.Verdict(False, base.WRONG_ANSWER, detail, score=f1)

  # -- search corpus ---------------------------------------------------------

  def corpus(self, examples_or_seed: Union[int, Sequence[base.Example]],
             num_people: Optional[int] = None) -> list[Article]:
    """The articles to search for these examples (or a generator seed)."""
    return corpus(examples_or_seed, num_people or self.num_people or 50)


def corpus(examples_or_seed: Union[int, Sequence[base.Example]],
           num_people: int = 50) -> list[Article]:
  """The search corpus for examples, or for a generator seed.

  Args:
    examples_or_seed: a generator seed (with `num_people`), or examples:
      generated ones carry their knowledge base parameters, loaded ones their
      context paragraphs. The result is the union, duplicates removed, in
      first-occurrence order.
    num_people: knowledge base size when a seed is given.
  """
  if isinstance(examples_or_seed, int):
    return build_knowledge_base(examples_or_seed, num_people).articles()
  out, seen, kbs = [], set(), set()

  def add(article: Article):
    key = (article.title, article.text)
    if key not in seen:
      seen.add(key)
      out.append(article)

  for ex in examples_or_seed:
    md = ex.metadata
    if "kb" in md:
      kb_key = (int(md["kb"]["seed"]), int(md["kb"]["num_people"]))
      if kb_key not in kbs:
        kbs.add(kb_key)
        for a in build_knowledge_base(*kb_key).articles():
          add(a)
    for title, sentences in md.get("context", []):
      add(Article(title, " ".join(s.strip() for s in sentences)))
  return out
