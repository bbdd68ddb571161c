"""Both languages say everything: every rule's sentences exist in English and Chinese."""

from __future__ import annotations

import re
import string

import pytest
import test_rules

from octa_tui.diagnosis import RULE_CODES, Severity, evaluate_rules, severity_name
from octa_tui.diagnosis.texts import TEXTS, WORDS

CJK = re.compile(r"[\u4e00-\u9fff]")


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_every_rule_has_texts_in_both_languages_with_the_same_placeholders() -> None:
    assert set(TEXTS["en"]) == set(TEXTS["zh"]) == {*RULE_CODES, "links"}
    for code in (*RULE_CODES, "links"):
        assert set(TEXTS["en"][code]) == set(TEXTS["zh"][code]), code
        for key, template in TEXTS["en"][code].items():
            assert placeholders(template) == placeholders(TEXTS["zh"][code][key]), (code, key)
    assert set(WORDS["en"]) == set(WORDS["zh"])


POSITIVE = [c for c in test_rules.CASES if c.fires]


@pytest.mark.parametrize("case", POSITIVE, ids=[f"{c.code}: {c.name}" for c in POSITIVE])
def test_every_verdict_reads_in_chinese(case) -> None:
    # GIVEN a history that raises the rule WHEN judged in Chinese
    [v] = [v for v in evaluate_rules(case.build(), lang="zh") if v.code == case.code]
    # THEN its title, cause and instruction are Chinese sentences
    for text in (v.title, v.cause, v.instruction):
        assert CJK.search(text), text


def test_every_rule_has_a_chinese_case() -> None:
    assert {c.code for c in POSITIVE} == set(RULE_CODES)


def test_hypotheses_are_worded_as_such() -> None:
    for case in POSITIVE:
        for lang, marks in (("en", ("may", "try", "Try")), ("zh", ("可能", "试试", "经验法则"))):
            [v] = [v for v in evaluate_rules(case.build(), lang=lang) if v.code == case.code]
            if v.confidence == "hypothesis":
                assert any(m in v.title + v.cause + v.instruction for m in marks), (case.name, lang)


def test_severity_names_have_one_home() -> None:
    assert [severity_name(s) for s in Severity] == ["ok", "info", "warning", "critical"]
    assert [severity_name(s, "zh") for s in Severity] == ["正常", "提示", "警告", "严重"]


def test_set_language_and_the_environment(monkeypatch) -> None:
    from octa_tui.diagnosis import Engine, get_language, set_language

    monkeypatch.setenv("OCTA_TUI_LANG", "zh_CN.UTF-8")
    try:
        set_language(None)
        assert get_language() == "zh" and Engine().lang == "zh" and severity_name(Severity.WARN) == "警告"
        assert set_language("en") == "en" and Engine().lang == "en"
        monkeypatch.setenv("OCTA_TUI_LANG", "fr")
        set_language(None)
        assert get_language() == "en"  # an unsupported value does not stop a monitor from starting
        with pytest.raises(ValueError, match="en, zh"):
            set_language("fr")
    finally:
        set_language(None)
