"""The arms as a demanding user drives them: more passages than the context budget holds,
a generator that repeats its reasoning sentence. Scripted generator and retrievers (no
model, no index): see ``tests/test_answers_misuse.py``."""

from __future__ import annotations

from searchagent.cli.ask_cmd import format_answer
from searchagent.strategies.multi import MultiHopStrategy
from searchagent.strategies.single import SingleStrategy
from searchagent.types import Hit
from tests.test_answers_misuse import Funnel, Scripted


class Many:
    """A retriever with ``k`` long passages for any query."""

    def search(self, query, k, *, budget=None):
        return [Hit(id=f"p{r}", score=1.0 / (r + 1), title=f"Passage {r}",
                    text=" ".join(["word"] * 200), row=r) for r in range(k)]


def test_passages_left_out_by_the_context_budget_are_reported():
    # ask -k 100 listed 100 passages while the prompt held 20: nothing said which
    generator = Scripted(["Tulsa"])
    answer = SingleStrategy(Many(), generator, k=100, context_budget_tokens=1200).run("Where?")
    [note] = [s.detail for s in answer.trace if s.kind == "fit_budget"]
    prompt = generator.requests[0].messages[-2]["content"]
    assert note["passages_given"] == 100 and note["passages"] == prompt.count("Title: ") < 100
    assert note["ids_left_out"][0] == f"p{note['passages']}" and len(note["ids_left_out"]) == \
        100 - note["passages"]
    assert f"passages 100 -> {note['passages']} in the prompt" in format_answer(answer)
    within = SingleStrategy(Many(), Scripted(["Tulsa"]), k=3).run("Where?")
    assert not [s for s in within.trace if s.kind == "fit_budget"]


def test_multi_reports_the_budget_once_per_change():
    answer = MultiHopStrategy(Funnel(), Scripted(["A fact."]), k=40, max_hops=3,
                              context_budget_tokens=300).run("Where?")
    notes = [s.detail for s in answer.trace if s.kind == "fit_budget"]
    assert notes and len(notes) == len({n["passages_given"] for n in notes})


def test_a_repeated_reasoning_sentence_enters_the_prompt_once():
    # SmolLM2 wrote "The band had their first performance in New York City." at every hop;
    # each copy went into "Reasoning so far", and at hop 3 it wrote the sentence twice
    step = "The band had their first performance in New York City."
    generator = Scripted([step, step, f"{step} {step}", "New York City"])
    answer = MultiHopStrategy(Funnel(), generator, k=4, max_hops=4).run("Where?")
    assert answer.hops == 4 and answer.answer == "New York City"
    final = generator.requests[-1].messages[-2]["content"]
    assert final.count(step) == 1
