"""GSM8K: grade-school math word problems, solved with the calculator tool.

* `load(path)`: the published jsonl ({"question", "answer"}, the answer a
  worked solution ending '#### N'), or a TFDS data dir holding a prepared
  `gsm8k` dataset (TensorFlow Datasets is imported only then).
* `generate(n, seed, split)`: multi-step arithmetic word problems (2-4
  operations on multi-digit quantities, integer intermediate results), whose
  gold answer is an integer.
* Answers: the last `<answer> ... </answer>`, else '#### N', else 'the answer
  is N', else the last number of the response. Verification compares exact
  values after removing commas, currency signs, units and trailing '.0'.
"""

from __future__ import annotations

import glob
import math
import os
import random
import re
from typing import Callable, Iterator, Optional

from swirl_jax.tasks import answers as answers_lib
from swirl_jax.tasks import base
from swirl_jax.tasks import prompts

NOT_A_NUMBER = "not_a_number"

_FINAL_RE = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)
_THE_ANSWER_RE = re.compile(
    r"(?:final answer|the answer)\s*(?:is|:)?\s*:?\s*\$?\s*(" +
    r"[-+]?[\d,]*\.?\d+(?:/\d+)?)", re.IGNORECASE)


def _version_key(name: str) -> tuple[int, ...]:
  parts = name.split(".")
  return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else ()


def gold_from_solution(solution: str, where: str = "") -> str:
  """The normalised number after '#### ' in a GSM8K solution."""
  m = _FINAL_RE.search(solution)
  if not m:
    raise base.DataFormatError(
        f"{where}: the answer does not end with '#### <number>': "
        f"{solution[-80:]!r}")
  value = answers_lib.parse_number(m.group(1))
  if value is None:
    raise base.DataFormatError(
        f"{where}: the final answer {m.group(1)!r} after '####' is not a "
        "number")
  return answers_lib.format_number(value)


# ----------------------------------------------------------------------------
# Procedural word problems. Each template draws quantities and returns
# (question, [(expression, value), ...] steps, answer).

_NAMES = ("Amara", "Bilal", "Chen", "Dalia", "Emeka", "Farah", "Goran",
          "Hana", "Ivo", "Jomo", "Kalani", "Lior", "Maren", "Nilo", "Oona",
          "Priya", "Quinn", "Rafa", "Sanne", "Tomas", "Uma", "Viktor",
          "Wren", "Xia", "Yusuf", "Zora")
_GOODS = ("notebooks", "candles", "jars of honey", "bags of rice", "lamps",
          "pairs of socks", "bottles of juice", "flower pots", "puzzles",
          "packs of cards")
_CONTAINERS = (("crates", "bottles"), ("boxes", "apples"),
               ("cartons", "eggs"), ("bins", "bolts"), ("trays", "muffins"),
               ("sacks", "potatoes"))


def _t_daily_sales(rng: random.Random):
  per_box = rng.randint(12, 48)
  boxes = rng.randint(15, 95)
  broken = rng.randint(3, per_box * boxes // 4)
  days = rng.randint(7, 31)
  item = rng.choice(("cookies", "bread rolls", "dumplings", "tarts"))
  q = (f"A bakery bakes {boxes} boxes of {item} every day, and each box "
       f"holds {per_box} {item}. Each day {broken} of the {item} are "
       f"damaged and thrown away. How many {item} does the bakery have "
       f"left to sell over {days} days?")
  a = boxes * per_box
  b = a - broken
  c = b * days
  return q, [(f"{boxes}*{per_box}", a), (f"{a}-{broken}", b),
             (f"{b}*{days}", c)], c


def _t_wages(rng: random.Random):
  name = rng.choice(_NAMES)
  wage = rng.randint(14, 65)
  hours = rng.randint(18, 48)
  rent = rng.randint(100, wage * hours - 50)
  weeks = rng.randint(4, 26)
  q = (f"{name} earns ${wage} per hour and works {hours} hours each week. "
       f"Every week {name} pays ${rent} for rent. How much money does {name} "
       f"have left after {weeks} weeks?")
  a = wage * hours
  b = a - rent
  c = b * weeks
  return q, [(f"{wage}*{hours}", a), (f"{a}-{rent}", b),
             (f"{b}*{weeks}", c)], c


def _t_packing(rng: random.Random):
  outer, inner = rng.choice(_CONTAINERS)
  per = rng.randint(12, 60)
  trucks = rng.randint(3, 24)
  each = rng.randint(11, 90)
  total = per * trucks * each
  q = (f"A warehouse has {total} {inner}. They are packed into {outer} of "
       f"{per} {inner} each, and the {outer} are shared equally among "
       f"{trucks} trucks. How many {outer} does each truck carry?")
  a = total // per
  return q, [(f"{total}/{per}", a), (f"{a}/{trucks}", each)], each


def _t_tickets(rng: random.Random):
  name = rng.choice(_NAMES)
  groups = rng.randint(3, 12)
  price_a = rng.randint(12, 85)
  while math.gcd(price_a, groups) != 1:  # then some count_a below works
    price_a += 1
  price_b = rng.randint(5, price_a - 1)
  count_b = rng.randint(20, 300)
  count_a = rng.randint(20, 400)
  while (count_a * price_a + count_b * price_b) % groups:
    count_a += 1
  q = (f"{name} sold {count_a} adult tickets at ${price_a} each and "
       f"{count_b} child tickets at ${price_b} each for a charity concert. "
       f"The money is split equally among {groups} charities. How many "
       f"dollars does each charity receive?")
  a = count_a * price_a
  b = count_b * price_b
  c = a + b
  d = c // groups
  return q, [(f"{count_a}*{price_a}", a), (f"{count_b}*{price_b}", b),
             (f"{a}+{b}", c), (f"{c}/{groups}", d)], d


def _t_orchard(rng: random.Random):
  rows = rng.randint(12, 60)
  per_row = rng.randint(15, 45)
  bag = rng.choice((12, 15, 20, 24, 25, 30, 40, 50))
  trees = rows * per_row
  step = bag // math.gcd(bag, trees)  # per_tree multiple of step fills bags
  per_tree = step * rng.randint(max(1, 20 // step), max(1, 150 // step))
  fruit = rng.choice(("apples", "pears", "plums", "lemons"))
  q = (f"An orchard has {rows} rows of trees with {per_row} trees in each "
       f"row. Each tree gives {per_tree} {fruit}. The {fruit} are packed "
       f"into bags of {bag}. How many bags are filled?")
  a = trees
  b = a * per_tree
  c = b // bag
  return q, [(f"{rows}*{per_row}", a), (f"{a}*{per_tree}", b),
             (f"{b}/{bag}", c)], c


def _t_travel(rng: random.Random):
  v1 = rng.randint(45, 140)
  h1 = rng.randint(2, 9)
  v2 = rng.randint(30, 120)
  h2 = rng.randint(2, 9)
  trips = rng.randint(3, 15)
  q = (f"A train travels at {v1} kilometres per hour for {h1} hours and "
       f"then at {v2} kilometres per hour for {h2} hours. It makes this "
       f"journey {trips} times a month. How many kilometres does it travel "
       f"in a month?")
  a = v1 * h1
  b = v2 * h2
  c = a + b
  d = c * trips
  return q, [(f"{v1}*{h1}", a), (f"{v2}*{h2}", b), (f"{a}+{b}", c),
             (f"{c}*{trips}", d)], d


def _t_percent(rng: random.Random):
  good = rng.choice(_GOODS)
  pct = rng.choice(range(5, 95, 5))
  stock = 20 * rng.randint(15, 200)
  sold_pct = stock * pct // 100
  more = rng.randint(1, stock - sold_pct)
  q = (f"A shop has {stock} {good} in stock. On Monday it sells {pct}% of "
       f"them, and on Tuesday it sells {more} more. How many {good} are "
       f"left?")
  b = stock - sold_pct
  c = b - more
  return q, [(f"{stock}*{pct}/100", sold_pct), (f"{stock}-{sold_pct}", b),
             (f"{b}-{more}", c)], c


def _t_savings(rng: random.Random):
  name = rng.choice(_NAMES)
  weekly = rng.randint(15, 120)
  weeks = rng.randint(10, 52)
  saved = weekly * weeks
  price = rng.randint(saved // 4, saved * 3 // 4)
  friends = rng.randint(2, 9)
  price += (saved - price) % friends
  q = (f"{name} saves ${weekly} every week for {weeks} weeks, then buys a "
       f"bicycle for ${price}. {name} shares the rest of the savings equally "
       f"among {friends} friends. How many dollars does each friend get?")
  a = saved
  b = a - price
  c = b // friends
  return q, [(f"{weekly}*{weeks}", a), (f"{a}-{price}", b),
             (f"{b}/{friends}", c)], c


def _t_school(rng: random.Random):
  classes = rng.randint(4, 18)
  students = rng.randint(18, 36)
  pencils = rng.randint(3, 12)
  pack = rng.choice((6, 8, 10, 12, 24))
  total = classes * students * pencils
  # Spare pencils that make the total fill whole packs.
  extra = (-total) % pack + pack * rng.randint(1, 3)
  q = (f"A school has {classes} classes with {students} students each. It "
       f"buys {pencils} pencils for every student plus {extra} "
       f"spare pencils. Pencils come in packs of {pack}. How many packs "
       f"does the school buy?")
  a = classes * students
  b = a * pencils
  c = b + extra
  d = c // pack
  return q, [(f"{classes}*{students}", a), (f"{a}*{pencils}", b),
             (f"{b}+{extra}", c), (f"{c}/{pack}", d)], d


TEMPLATES: tuple[Callable[[random.Random], tuple], ...] = (
    _t_daily_sales, _t_wages, _t_packing, _t_tickets, _t_orchard, _t_travel,
    _t_percent, _t_savings, _t_school)


def _solution_text(steps, answer: int) -> str:
  lines = [f"{expr} = <<{expr}={value}>>{value}" for expr, value in steps]
  return "\n".join(lines + [f"#### {answer}"])


@base.register_task("gsm8k")
class GSM8KTask(base.Task):
  """GSM8K with the SWiRL calculator prompt.

  Args:
    max_steps: the SWiRL step limit (10 for math).
    prompt_style: 'full' (the SWiRL prompt) or 'compact' (one line, for
      tiny models on a CPU).
  """

  name = "gsm8k"
  tools = (prompts.MATH_TAG,)

  def __init__(self, max_steps: int = 10, prompt_style: str = "full"):
    if max_steps < 1:
      raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    prompts.swirl_calculator_prompt("", style=prompt_style)  # validates
    self.max_steps = max_steps
    self.prompt_style = prompt_style

  # -- loading ---------------------------------------------------------------

  def load(self, path: str, split: str = "test") -> list[base.Example]:
    """Reads GSM8K jsonl (`path` a file) or TFDS `gsm8k` (`path` a data dir).

    For a jsonl file, `split` only labels the examples; for a TFDS data dir
    it selects the TFDS split ('train' / 'test').
    """
    path = os.fspath(path)
    if os.path.isdir(path):
      return self.load_tfds(split=split, data_dir=path)
    out = []
    for i, (lineno, rec) in enumerate(base.read_jsonl(path)):
      where = f"{path}:{lineno}"
      question = base.require(rec, "question", str, where)
      solution = base.require(rec, "answer", str, where)
      out.append(self._example(f"gsm8k-{split}-{i}", question, solution,
                               split, where))
    return out

  def load_tfds(self, split: str = "test",
                data_dir: Optional[str] = None) -> list[base.Example]:
    """Reads a prepared TFDS `gsm8k` dataset (it cannot download here).

    Raises:
      FileNotFoundError: no prepared gsm8k under `data_dir`.
    """
    data_dir = data_dir or os.environ.get(
        "TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))
    infos = sorted(glob.glob(
        os.path.join(data_dir, "gsm8k", "*", "dataset_info.json")))
    if not infos:
      raise FileNotFoundError(
          f"No prepared TFDS 'gsm8k' dataset under {data_dir!r} (looked for "
          "gsm8k/<version>/dataset_info.json). Prepare it where there is "
          "network access (tfds build gsm8k --data_dir=...) and copy it here, "
          "or pass the GSM8K jsonl file instead.")
    try:
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
          "Reading TFDS gsm8k needs tensorflow-datasets: pip install "
          "'swirl_jax[data]'.") from e
    # The newest prepared version, read without the (downloading) builder.
    version_dir = max((os.path.dirname(p) for p in infos),
                      key=lambda d: _version_key(os.path.basename(d)))
    builder = tfds.builder_from_directory(version_dir)
    if split not in builder.info.splits:
      raise ValueError(f"TFDS gsm8k in {version_dir} has no split {split!r}; "
                       f"it has {sorted(builder.info.splits)}")
    ds = builder.as_dataset(split=split, shuffle_files=False)
    out = []
    for i, rec in enumerate(tfds.as_numpy(ds)):
      question = rec["question"].decode("utf-8")
      solution = rec["answer"].decode("utf-8")
      out.append(self._example(f"gsm8k-{split}-{i}", question, solution,
                               split, f"tfds gsm8k[{split}][{i}]"))
    return out

  def _example(self, id_, question, solution, split, where) -> base.Example:
    gold = gold_from_solution(solution, where)
    return base.Example(id=id_, question=question, answer=gold,
                        metadata={"split": split, "solution": solution})

  # -- generation ------------------------------------------------------------

  def generate(self, n: int, seed: int = 0,
               split: str = "train") -> list[base.Example]:
    base.check_split(split)
    rng = random.Random(base.seed_for(seed, "gsm8k", split))

    def candidates() -> Iterator[tuple[str, base.Example]]:
      while True:
        template = rng.choice(TEMPLATES)
        question, steps, answer = template(rng)
        ex = base.Example(
            id=base.content_id("gsm8k-gen", question),
            question=question, answer=str(answer),
            metadata={"solution": _solution_text(steps, answer),
                      "template": template.__name__.removeprefix("_t_"),
                      "num_operations": len(steps)})
        yield question, ex

    return base.take_split(candidates(), n, split, 50 * n + 100, self.name)

  # -- prompting and grading -------------------------------------------------

  def prompt(self, example: base.Example) -> str:
    return prompts.swirl_calculator_prompt(example.question, self.max_steps,
                                           self.prompt_style)

  def parse_answer(self, text: str) -> Optional[str]:
    if not text:
      return None
    tagged = answers_lib.extract_tagged(text, prompts.ANSWER_TAG)
    if tagged is not None:
      return tagged
    m = _FINAL_RE.search(text)
    if m:
      return m.group(1).strip()
    found = _THE_ANSWER_RE.findall(text)
    if found:
      return found[-1]
    return answers_lib.last_number(text)

  def verify(self, example: base.Example,
             answer: Optional[str]) -> base.Verdict:
    if answer is None or not answer.strip():
      return base.Verdict(False, base.NO_ANSWER, "no answer given")
    value = answers_lib.parse_number(answer)
    if value is None:
      return base.Verdict(False, NOT_A_NUMBER,
                          f"answer {answer[:60]!r} is not a number")
    gold = answers_lib.parse_number(example.answer)
    if gold is None:
      raise ValueError(
          f"Example {example.id}: gold answer {example.answer!r} is not a "
          "number")
    got = answers_lib.format_number(value)
    if value == gold:
      return base.Verdict(True, base.CORRECT, f"{got} == {example.answer}")
    return base.Verdict(False, base.WRONG_ANSWER,
                        f"{got} != {example.answer}")
