"""Every dataset shape loads into Examples from small fixtures written in that shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.examples import join_sentences, subset
from eval.loaders import detect_format, load_dataset, load_spec, parse_spec
from eval.loaders.reading import read_records
from searchagent.errors import InputError

FIX = Path(__file__).parent / "fixtures" / "eval"


def first_format(name: str) -> str:
    return detect_format(next(read_records(FIX / name))[1], name)


@pytest.mark.parametrize("name", ["hotpot_official.json", "hotpot_hf.jsonl"])
def test_hotpotqa_official_and_hf_shapes_agree(name):
    assert first_format(name) == "hotpotqa"
    bridge, comparison = load_dataset("hotpotqa", FIX / name)
    assert bridge.id == "hp1" and bridge.answers == ["Chief of Protocol"]
    assert bridge.qtype == "bridge" and comparison.answers == ["yes"]
    assert bridge.supporting_titles == ["Shirley Temple", "Kiss and Tell (1945 film)"]
    assert [p.title for p in bridge.paragraphs] == ["Meet Corliss Archer", "Shirley Temple",
                                                    "Kiss and Tell (1945 film)"]
    assert [p.supporting for p in bridge.paragraphs] == [False, True, True]
    # HotpotQA sentences carry their own leading space: no doubled spaces when joined
    assert bridge.paragraphs[1].text == ("Shirley Temple Black was an American actress and "
                                         "diplomat. As an adult, she served as Chief of "
                                         "Protocol of the United States.")


def test_2wiki_official_and_flashrag_shapes():
    (official,) = load_dataset("2wiki", FIX / "2wiki_official.json", fmt="2wikimultihopqa")
    flash = load_dataset("2wiki", FIX / "2wiki_flashrag.jsonl")
    assert first_format("2wiki_flashrag.jsonl") == "flashrag"
    assert official.answers == flash[0].answers == ["Małgorzata Braunek"]
    assert official.qtype == flash[0].qtype == "compositional"
    assert set(official.supporting_titles) == set(flash[0].supporting_titles) == {
        "Polish-Russian War (film)", "Xawery Żuławski"}
    # 2Wiki sentences have no leading space: one is inserted between them
    assert flash[0].paragraphs[1].text == ("Xawery Żuławski is a Polish film director. He is "
                                           "the son of actress Małgorzata Braunek.")
    assert official.paragraphs == flash[0].paragraphs
    assert flash[1].answers == ["Scott Derrickson", "Scott Edward Derrickson"]


def test_musique_jsonl_named_json_with_aliases_and_hops():
    assert first_format("musique.json") == "musique"
    two, three = load_dataset("musique", FIX / "musique.json")
    assert two.answers == ["Miquette Giraudy", "M. Giraudy"]
    assert (two.qtype, three.qtype) == ("2hop", "3hop")
    assert two.supporting_titles == ["Green (Steve Hillage album)", "Miquette Giraudy"]
    assert len(two.paragraphs) == 3 and len(two.supporting_paragraphs) == 2


def test_musique_without_paragraphs_uses_document_ids():
    (example,) = load_dataset("musique", FIX / "musique_no_paragraphs.json")
    assert example.paragraphs == []
    assert example.supporting_titles == ["Green (Steve Hillage album)", "Miquette Giraudy"]


def test_flashrag_musique_support_paragraphs():
    (example,) = load_dataset("musique", FIX / "musique_flashrag.jsonl")
    assert example.qtype == "2hop"
    assert [p.title for p in example.paragraphs] == ["Green (Steve Hillage album)",
                                                     "Miquette Giraudy"]
    assert all(p.supporting for p in example.paragraphs)


def test_ircot_answer_objects_spans_numbers_dates():
    assert first_format("ircot.jsonl") == "ircot"
    span, number, date = load_dataset("hotpotqa", FIX / "ircot.jsonl")
    assert span.answers == ["Chief of Protocol"] and number.answers == ["1"]
    assert date.answers == ["16 July 1966"]
    assert span.supporting_titles == ["Shirley Temple", "Kiss and Tell (1945 film)"]
    assert number.paragraphs == []


def test_flashrag_nq_and_plain_question_lists():
    flash = load_dataset("nq", FIX / "flashrag.jsonl")
    assert [e.id for e in flash] == ["test_0", "test_1"]
    assert flash[0].answers == ["Wilhelm Conrad Röntgen"]
    nq = load_dataset("nq", FIX / "nq_open.jsonl")
    assert first_format("nq_open.jsonl") == "nq_open"
    assert [e.id for e in nq] == ["0", "1"]            # no ids: numbered by position
    assert nq[1].answers == ["Bobby Scott", "Bob Russell"]
    plain = load_dataset("squad", FIX / "qa_list.jsonl")
    assert plain[1].answers == ["Levi's Stadium", "Santa Clara, California"]


@pytest.mark.parametrize("name,ids", [("triviaqa_official.json", ["tc_1", "tc_2"]),
                                      ("triviaqa_hf.jsonl", ["tc_2"]),
                                      ("triviaqa_sample.jsonl", ["0", "1"])])
def test_triviaqa_shapes_keep_aliases(name, ids):
    examples = load_dataset("triviaqa", FIX / name)
    assert [e.id for e in examples] == ids
    mars = [e for e in examples if "Red Planet" in e.question][0]
    expected = ["Mars"] if name == "triviaqa_sample.jsonl" else ["Mars", "Planet Mars"]
    assert mars.answers == expected
    if name == "triviaqa_official.json":
        assert examples[0].answers == ["December", "Dec", "Dec."]


def test_an_alias_field_that_is_not_a_list_is_refused(tmp_path):
    """A string ``aliases`` was split into letters: every prediction containing an 'a'
    scored Acc 1; a string ``answer_aliases`` (MuSiQue) was dropped without a word."""
    rows = tmp_path / "tqa.jsonl"
    rows.write_text(json.dumps({"question": "q?", "answer": {"value": "Paris",
                                                            "aliases": "Paris"}}) + "\n")
    with pytest.raises(InputError, match=r"line 1, field 'answer\.aliases': expected a list"):
        load_dataset("tqa", rows)
    rows.write_text(json.dumps({"id": "2hop__1", "question": "q?", "answer": "x",
                                "answer_aliases": "y", "paragraphs": []}) + "\n")
    with pytest.raises(InputError, match=r"line 1, field 'answer_aliases': expected a list"):
        load_dataset("musique", rows, fmt="musique")


def test_squad_official_and_hf():
    assert first_format("squad_official.json") == "squad"
    afc, nfc = load_dataset("squad", FIX / "squad_official.json")
    assert afc.id == "56be4db0acb8001400a502ec" and afc.answers == ["Denver Broncos"]
    assert afc.supporting_titles == ["Super Bowl 50"] and afc.paragraphs[0].supporting
    (hf,) = load_dataset("squad", FIX / "squad_hf.jsonl")
    assert hf.answers[0] == "Levi's Stadium" and "Levi's Stadium" in hf.paragraphs[0].text


def test_spec_parsing_and_format_override():
    assert parse_spec("hotpotqa:/x/y.jsonl").fmt is None
    spec = parse_spec(f"tqa:qa:{FIX / 'triviaqa_sample.jsonl'}")
    assert (spec.name, spec.fmt) == ("tqa", "nq_open")
    assert [e.dataset for e in load_spec(spec)] == ["tqa", "tqa"]
    with pytest.raises(InputError, match="NAME:PATH"):
        parse_spec("no-colon")
    with pytest.raises(InputError, match="unknown dataset format"):
        load_dataset("x", FIX / "nq_open.jsonl", fmt="nope")
    with pytest.raises(InputError, match=r"unknown format 'hotptqa' .*known: .*hotpotqa"):
        parse_spec(f"h:hotptqa:{FIX / 'nq_open.jsonl'}")
    assert parse_spec("h:rel:dir/file.jsonl").path == "rel:dir/file.jsonl"   # a colon path


def test_bad_inputs_name_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "q?", "golden_answers": ["x"]}\n'
                   '{"id": "b", "question": "q2?", "golden_answers": []}\n')
    with pytest.raises(InputError, match=r"bad.jsonl, line 2, field .golden_answers.: no gold"):
        load_dataset("d", bad)
    bad.write_text('{"id": "a", "question": "q?", "golden_answers": ["x"]}\n{oops\n')
    with pytest.raises(InputError, match="line 2.*malformed JSON"):
        load_dataset("d", bad)
    bad.write_text('{"id": "a", "question": "q?", "answer": ["x"]}\n'
                   '{"id": "a", "question": "q2?", "answer": ["y"]}\n')
    with pytest.raises(InputError, match="line 2.*duplicate question id 'a'"):
        load_dataset("d", bad)
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([{"_id": "1", "question": "q", "answer": "a", "context": []},
                                  {"_id": "2", "answer": "a", "context": []}]))
    with pytest.raises(InputError, match=r"field '\[1\]\.question'.*missing"):
        load_dataset("d", listed)
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text('{"foo": 1}\n')
    with pytest.raises(InputError, match="cannot tell the dataset format"):
        load_dataset("d", unknown)
    with pytest.raises(InputError, match="not found"):
        load_dataset("d", tmp_path / "missing.jsonl")


def test_a_bad_record_s_error_names_its_question_id(tmp_path):
    """A JSON-list file (the official HotpotQA dev set is one line) named only the item
    number; the id is what one searches the file for."""
    listed = tmp_path / "hotpot.json"
    listed.write_text(json.dumps([{"_id": "5a8b57f2", "question": "q", "answer": "a",
                                   "context": []},
                                  {"_id": "5ab3b0bf", "question": "q", "context": []}]))
    with pytest.raises(InputError, match=r"hotpot.json, field '\[1\]\.answer': missing field "
                                         r"\(question id '5ab3b0bf'\)"):
        load_dataset("h", listed)
    rows = tmp_path / "ircot.jsonl"
    rows.write_text(json.dumps({"question_id": 17, "question_text": "q?",
                                "answers_objects": []}) + "\n")
    with pytest.raises(InputError, match=r"line 1, field 'answers_objects': no gold answer "
                                         r"\(question id '17'\)"):
        load_dataset("i", rows)


def test_odd_files_fail_with_an_input_error_not_a_crash(tmp_path):
    """A JSON file holding a bare string or number raised AttributeError, and a row read as
    SQuAD without 'context' a KeyError: tracebacks naming no file, line or field."""
    for text in ('"just text"', "5"):
        odd = tmp_path / "odd.json"
        odd.write_text(text)
        with pytest.raises(InputError, match=r"odd.json, line 1: expected a JSON object"):
            load_dataset("x", odd, fmt="nq_open")
        with pytest.raises(InputError, match="odd.json: cannot tell the dataset format"):
            load_dataset("x", odd)
    rows = tmp_path / "squad.jsonl"
    rows.write_text(json.dumps({"id": "q1", "question": "q?", "answers": {"text": ["a"]}})
                    + "\n")
    with pytest.raises(InputError, match=r"line 1, field 'context': missing field"):
        load_dataset("s", rows, fmt="squad")


def test_a_lone_surrogate_escape_is_refused_where_it_is(tmp_path):
    """JSON may escape a lone surrogate; the question loaded, and then DuckDB refused to
    store its row, which stopped every rerun of the run at that question."""
    rows = tmp_path / "s.jsonl"
    rows.write_text('{"id": "a", "question": "fine \\ud83d\\ude00?", "answer": ["x"]}\n'
                    '{"id": "b", "question": "q\\ud800?", "answer": ["x"]}\n')
    with pytest.raises(InputError, match=r"s.jsonl, line 2, field 'question': not valid UTF-8"
                                         r".*\(question id 'b'\)"):
        load_dataset("nq", rows)
    rows.write_text('{"id": "a", "question": "fine \\ud83d\\ude00?", "answer": ["x"]}\n')
    assert load_dataset("nq", rows)[0].question == "fine \U0001F600?"   # a proper pair
    rows.write_bytes(b'{"id": "a", "question": "q?", "answer": ["x"]}\n'
                     b'{"id": "c", "question": "caf\xe9?", "answer": ["x"]}\n')   # raw Latin-1
    with pytest.raises(InputError, match=r"line 2, field 'question': .*\(question id 'c'\)"):
        load_dataset("nq", rows)
    listed = tmp_path / "l.json"
    listed.write_text(json.dumps([{"_id": "h1", "question": "q", "answer": "a",
                                   "context": [["T", ["ok", "bad \udfff"]]]}]))
    with pytest.raises(InputError, match=r"field '\[0\]\.context\[0\]\[1\]\[1\]'"):
        load_dataset("h", listed)


def test_line_separators_inside_json_strings_stay_in_their_line(tmp_path):
    """JSON strings may hold U+2028 / U+2029 / U+0085 raw (``ensure_ascii=False`` writes
    them so); ``str.splitlines`` broke such a line in two and refused it as malformed."""
    from eval.arm_import import load_questions

    rows = tmp_path / "q.jsonl"
    text = "Who\u2028wrote\u2029it\x85first?"
    rows.write_text(json.dumps({"id": "a", "question": text, "answer": ["x"]},
                               ensure_ascii=False) + "\r\n", encoding="utf-8")
    assert [e.question for e in load_dataset("nq", rows)] == [text]
    rows.write_text(json.dumps({"dataset": "nq", "qid": "a", "question": text},
                               ensure_ascii=False) + "\n", encoding="utf-8")
    assert load_questions(rows) == {("nq", "a"): text}


def test_wrongly_typed_ids_are_refused_not_renumbered(tmp_path):
    rows = tmp_path / "ids.jsonl"
    rows.write_text('{"_id": 7, "question": "q?", "answer": "a", "context": []}\n'
                    '{"_id": ["x"], "question": "q2?", "answer": "b", "context": []}\n')
    with pytest.raises(InputError, match=r"ids.jsonl, line 2, field '_id': .*got JSON array"):
        load_dataset("h", rows)
    rows.write_text('{"_id": 7, "question": "q?", "answer": "a", "context": []}\n')
    assert [e.id for e in load_dataset("h", rows)] == ["7"]         # an integer id is kept
    for bad, got in [("null", "null"), ("true", "boolean"), ('""', "empty")]:
        rows.write_text(f'{{"id": {bad}, "question": "q?", "answer": ["a"]}}\n')
        with pytest.raises(InputError, match=f"line 1, field 'id': .*{got}"):
            load_dataset("nq", rows)
    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps({"data": [{"title": "T", "paragraphs": [{"context": "c", "qas": [
        {"id": {"k": 1}, "question": "q?", "answers": [{"text": "c"}]}]}]}]}))
    with pytest.raises(InputError, match=r"field '\[0\]\.paragraphs\[0\]\.qas\[0\]\.id'"):
        load_dataset("s", squad)

def test_subset_first_n_or_seeded_sample():
    examples = load_dataset("nq", FIX / "nq_open.jsonl") * 1
    assert subset(examples, 1) == examples[:1]
    assert subset(examples, None) == examples
    many = [e for _ in range(10) for e in examples]
    a, b = subset(many, 5, seed=3), subset(many, 5, seed=3)
    assert a == b and len(a) == 5
    assert join_sentences(["A.", " B.", "C."]) == "A. B. C."
