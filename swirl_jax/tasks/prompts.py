"""Prompt texts shared by the task families.

* SWiRL multi-step prompts (search and calculator variants): the model may
  make up to N sequential tool queries; each step is reasoning plus either
  one tool call or the final answer, never both. A tool result comes back in
  the next user turn as `QUERY -> RESULT`.
* SCoRe first-attempt prompts and self-correction instructions (MATH, code).
* R3 self-reflection instructions (function calling, Countdown).

Prompts here are user-turn texts only; the chat template (Gemma's
`<start_of_turn>user ... <end_of_turn>`) is applied by the tokenizer layer.
"""

from __future__ import annotations

# Tool tags, as written by the model.
SEARCH_TAG = "search_query"
MATH_TAG = "math_exp"
ANSWER_TAG = "answer"

# ----------------------------------------------------------------------------
# SWiRL.

SWIRL_SEARCH_PROMPT = """\
You will answer a question that may need several facts combined. I will allow \
you to make up to {max_steps} sequential queries to a search engine before you \
answer. Each query returns the most relevant encyclopedia article, which I \
will show you in my next message in the form "QUERY -> RESULT".

At every step, first think step by step about what you already know and what \
is still missing. Then do exactly one of the following:
- issue one search query, written as <search_query> QUERY </search_query>
- answer the question, written as <answer> ANSWER </answer>
Please either issue a search query or answer the question, but not both.
Make each query short and about one entity or fact. Base your answer only on \
the search results. The answer should be short: a name, a place, a date, a \
number, or yes / no, with no explanation inside the answer tags.

Question: {question}"""

SWIRL_CALCULATOR_PROMPT = """\
You will solve a math word problem. I will allow you to make up to \
{max_steps} sequential queries to a calculator before you answer. Write a \
calculation as <math_exp> EXPRESSION </math_exp> and I will show you its \
value in my next message in the form "EXPRESSION -> RESULT". The calculator \
understands numbers, + - * / ^ and parentheses; write only numbers and \
operators in the expression, no units or words.

At every step, first think step by step about what you already know and what \
is still missing. Then do exactly one of the following:
- issue one calculator query, written as <math_exp> EXPRESSION </math_exp>
- answer the question, written as <answer> ANSWER </answer>
Please either issue a calculator query or answer the question, but not both.
Use the calculator for every arithmetic step instead of computing in your \
head. The answer is a single number, with no units or words inside the \
answer tags.

Question: {question}"""


# Compact variants of the two prompts for tiny models on a CPU: the same tool
# syntax and rules in one line, so that sequences stay short (the full
# prompts are ~200 tokens of a 1k-piece vocabulary).
COMPACT_SEARCH_PROMPT = (
    "Answer with up to {max_steps} searches. Each step: one "
    "<search_query> QUERY </search_query> or <answer> ANSWER </answer>, not "
    "both.\nQuestion: {question}")
COMPACT_CALCULATOR_PROMPT = (
    "Solve with up to {max_steps} calculator queries. Each step: one "
    "<math_exp> EXPRESSION </math_exp> or <answer> NUMBER </answer>, not "
    "both.\nQuestion: {question}")
PROMPT_STYLES = ("full", "compact")


def _check_style(style: str) -> None:
  if style not in PROMPT_STYLES:
    raise ValueError(f"Unknown prompt_style {style!r}; choose one of "
                     f"{PROMPT_STYLES}.")


def swirl_search_prompt(question: str, max_steps: int = 5,
                        style: str = "full") -> str:
  """The SWiRL multi-hop QA prompt (search tool, up to `max_steps` queries)."""
  _check_style(style)
  template = SWIRL_SEARCH_PROMPT if style == "full" else COMPACT_SEARCH_PROMPT
  return template.format(max_steps=max_steps, question=question)


def swirl_calculator_prompt(question: str, max_steps: int = 10,
                            style: str = "full") -> str:
  """The SWiRL math prompt (calculator tool, up to `max_steps` queries)."""
  _check_style(style)
  template = (SWIRL_CALCULATOR_PROMPT if style == "full"
              else COMPACT_CALCULATOR_PROMPT)
  return template.format(max_steps=max_steps, question=question)


def tool_result_message(query: str, result: str) -> str:
  """The next user turn after a tool call: 'QUERY -> RESULT'."""
  return f"{query.strip()} -> {result.strip()}"


# ----------------------------------------------------------------------------
# SCoRe: first attempts and self-correction.

FINAL_ANSWER_FORMAT = (
    'At the end of the solution, when you give your final answer, write it '
    'in the form "Final Answer: The final answer is $answer$. I hope it is '
    'correct."')

MATH_FIRST_ATTEMPT_PROMPT = """\
Solve the following math problem step by step. {final_answer_format}

Problem:
{problem}"""

MATH_CORRECTION_INSTRUCTION = (
    "There might be an error in the solution above because of lack of "
    "understanding of the question. Please correct the error, if any, and "
    "rewrite the solution. Only output the final solution! "
    + FINAL_ANSWER_FORMAT)

CODE_CORRECTION_INSTRUCTION = (
    "There might be an error in the code above because of lack of "
    "understanding of the question. Please correct the error, if any, and "
    "rewrite the solution. Only output the final correct Python program!")

HUMANEVAL_PROMPT = """\
Complete the following Python function. Write the whole function, including \
its signature and any imports it needs, in one ```python code block.

```python
{prompt}```"""

MBPP_PROMPT = """\
You are an expert Python programmer, and here is your task: {text}
Your code should pass these tests:

{tests}

Write the program in one ```python code block."""


def math_prompt(problem: str) -> str:
  """SCoRe's first-attempt MATH prompt (answer as 'Final Answer: ...')."""
  return MATH_FIRST_ATTEMPT_PROMPT.format(
      final_answer_format=FINAL_ANSWER_FORMAT, problem=problem)


def humaneval_prompt(prompt: str) -> str:
  return HUMANEVAL_PROMPT.format(prompt=prompt)


def mbpp_prompt(text: str, tests: str) -> str:
  return MBPP_PROMPT.format(text=text.strip(), tests=tests.strip())


# ----------------------------------------------------------------------------
# R3: reflect, retry, reward.

REFLECTION_INSTRUCTION = (
    "You tried to perform the task but did not produce the correct tool "
    "call. Reflect on what went wrong and write a short explanation that "
    "helps you do better next time.")

COUNTDOWN_REFLECTION_INSTRUCTION = (
    "You tried to solve the problem but your equation was not correct: it "
    "must use each of the given numbers exactly once and evaluate to the "
    "target. Reflect on what went wrong and write a short explanation that "
    "helps you do better next time.")

RETRY_INSTRUCTION = (
    "Now try the task again, using your reflection above.")

FUNCTION_CALLING_PROMPT = """\
You have access to the following functions, given as JSON specifications:
{tools}

Answer the user's request by calling one or more of these functions. Write \
the calls as a JSON list inside <tool_call> </tool_call> tags, each call an \
object with "name" and "arguments", for example:
<tool_call>[{{"name": "function_name", "arguments": {{"argument": "value"}}}}]</tool_call>
Use only the functions and argument names listed above, with values of the \
right types.

User request: {query}"""

COUNTDOWN_PROMPT = """\
Using the numbers {numbers}, write an arithmetic expression that equals \
{target}. You may use +, -, * and / and parentheses, and each number must be \
used exactly once. Think step by step, then give only the expression (no \
"=" sign, no target) inside <answer> </answer> tags, for example \
<answer> (1 + 2) * 3 </answer>."""


def function_calling_prompt(query: str, tools_json: str) -> str:
  return FUNCTION_CALLING_PROMPT.format(tools=tools_json, query=query)


def countdown_prompt(numbers, target) -> str:
  nums = ", ".join(str(n) for n in numbers)
  return COUNTDOWN_PROMPT.format(numbers=f"[{nums}]", target=target)
