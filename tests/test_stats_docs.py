"""docs/statistics.md documents every indicator of the registry."""

from pathlib import Path

from api.services.stats import indicators as registry

DOC = Path(__file__).resolve().parent.parent / "docs" / "statistics.md"


def test_every_indicator_of_the_registry_is_documented():
    text = DOC.read_text(encoding="utf-8")
    missing = [k for k, ind in registry.REGISTRY.items() if f"`{k}` | {ind.definition.name} |" not in text]
    assert not missing, f"add these indicators to docs/statistics.md: {missing}"


def test_the_registry_defines_what_the_bureau_asked_for():
    names = {ind.definition.name for ind in registry.REGISTRY.values()}
    for wanted in ("留守儿童数", "留守儿童占比", "建档率", "结对覆盖率", "谈心完成率", "家访完成率", "监护人沟通完成率",
                   "亲情电话完成率", "受资助人数", "突发事件数", "第1步按时告知率", "第3步告知用时(最长)"):  # fmt: skip
        assert wanted in names
    for ind in registry.REGISTRY.values():
        d = ind.definition
        assert (d.denominator is not None) == (d.kind.value in ("rate", "minutes")), d.key
        assert len(ind.quantities) == (2 if d.kind.value == "rate" else 1), d.key
