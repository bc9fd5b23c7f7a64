"""The best-of-N checker on crafted right, wrong and unreadable answers."""
import pytest

from toy.checker import RIGHT, UNREADABLE, WRONG, check_answer, checkable

LARGER = "Which is larger, 358 or 604?"
SORT = "Sort 3 9 1 4 from small to large."


@pytest.mark.parametrize("question, answer, fate", [
    (LARGER, "604 is larger.", RIGHT),
    (LARGER, "The larger number is 604.", RIGHT),
    (LARGER, "Comparing 358 and 604: the larger one is 604", RIGHT),
    (LARGER, "358", WRONG),
    (LARGER, "604 is larger than 358.", WRONG),  # the final number decides, as documented
    (LARGER, "It is 605.", WRONG),
    (LARGER, "The first one is larger.", UNREADABLE),
    (LARGER, "", UNREADABLE),
    (SORT, "1 3 4 9", RIGHT),
    (SORT, "Sorted from small to large: 1, 3, 4, 9.", RIGHT),
    (SORT, "3 9 1 4 becomes 1 3 4 9", RIGHT),
    (SORT, "1 4 3 9", WRONG),
    (SORT, "1 3 9", UNREADABLE),  # fewer numbers than were given
    (SORT, "1 3 4 9 10", WRONG),
    (SORT, "Here you go!", UNREADABLE),
])
def test_crafted_answers(question, answer, fate):
    assert check_answer(question, answer) == fate


def test_only_the_checkable_families_are_checked():
    assert checkable(LARGER) and checkable(SORT)
    assert not checkable("How do I bake bread at home?")
    with pytest.raises(ValueError, match="no exact check"):
        check_answer("How do I bake bread at home?", "Sure! Here are the steps you need.")
