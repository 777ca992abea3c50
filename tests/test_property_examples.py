"""The example count of the property tests (tests/fixtures/examples.py): in full for ``make test``, capped
in mutation runs by ``CASCADE_MUTATION_EXAMPLES`` (scripts/mutate's MUTATE_EXAMPLES)."""

from __future__ import annotations

import pytest

from tests.fixtures.examples import examples


def test_in_full_unless_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CASCADE_MUTATION_EXAMPLES", raising=False)
    assert examples(400) == 400
    monkeypatch.setenv("CASCADE_MUTATION_EXAMPLES", "10")
    assert (examples(400), examples(5)) == (10, 5)


@pytest.mark.parametrize("cap", ["0", "-3", "ten", "1.5"])
def test_a_cap_that_is_not_a_whole_number_is_refused(monkeypatch: pytest.MonkeyPatch, cap: str) -> None:
    monkeypatch.setenv("CASCADE_MUTATION_EXAMPLES", cap)
    with pytest.raises(ValueError, match="CASCADE_MUTATION_EXAMPLES"):
        examples(80)
