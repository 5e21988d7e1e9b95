"""The one registry class under tasks, tools, judges, objectives, presets."""

import pytest

from swirl_jax import registries


def _reg(**kw):
  return registries.Registry("widget", **kw)


def test_register_get_build_and_names():
  reg = _reg()

  @reg.register("round")
  class Round:  # pylint: disable=unused-variable
    def __init__(self, size=1):
      self.size = size

  reg.add("square", dict)
  assert reg.names() == ["round", "square"]
  assert "round" in reg and "oval" not in reg and 3 not in reg
  assert reg.get("round") is Round
  assert reg.build("round", size=4).size == 4
  assert list(reg) == ["round", "square"]


def test_unknown_name_suggests_the_closest_and_lists_all():
  reg = _reg()
  reg.add("alpha", 1)
  reg.add("beta", 2)
  with pytest.raises(ValueError) as info:
    reg.get("alpah")
  assert str(info.value) == ("Unknown widget 'alpah'. Did you mean 'alpha'? "
                             "Known widgets: ['alpha', 'beta'].")
  with pytest.raises(ValueError, match=r"Unknown widget 7\. Known widgets"):
    reg.get(7)


def test_taken_names_and_bad_names_are_errors():
  reg = _reg()

  class A:
    pass

  reg.add("a", A)
  reg.add("a", A)  # the same value again (a module reload) is allowed
  with pytest.raises(ValueError, match="'a' is already registered to .*A"):
    reg.add("a", int)
  with pytest.raises(ValueError, match="non-empty string, got ''"):
    reg.register("")
  with pytest.raises(ValueError, match="non-empty string, got None"):
    reg.add(None, 1)


def test_check_importer_and_prefix_families():
  imported = []

  def check(name, value):
    if not callable(value):
      raise TypeError(f"{name}: {value!r} is not callable")

  reg = _reg(importer=lambda: imported.append(1), check=check,
             plural="widgetry")
  with pytest.raises(TypeError, match="x: 3 is not callable"):
    reg.add("x", 3)
  reg.add_prefix("rg", lambda rest, **kw: (rest, kw))
  assert reg.build("rg/gcd", n=2) == ("gcd", {"n": 2})
  assert reg.names() == ["rg/<name>"]
  assert imported  # every lookup loads the registering modules first
  with pytest.raises(ValueError, match=r"Known widgetry: \[\]; also "
                     r"'rg/<name>'\."):
    reg.build("xx/gcd")


@pytest.mark.parametrize("lookup, bad, kind", [
    ("swirl_jax.tasks:get_task", "gsm8kk", "task"),
    ("swirl_jax.tools:get_tool", "serch", "tool"),
    ("swirl_jax.judges:get_judge_class", "rule", "judge"),
    ("swirl_jax.objectives.registry:get_objective", "sfft", "objective"),
    ("swirl_jax.models:get_config", "gemma3-270", "model preset"),
])
def test_every_kind_uses_it(lookup, bad, kind):
  import importlib
  module, fn = lookup.split(":")
  with pytest.raises(ValueError, match=f"Unknown {kind} '{bad}'. Did you "
                     "mean '"):
    getattr(importlib.import_module(module), fn)(bad)
