"""clinical/memo.py by_short_text: a memoised reading of a short text answers as the reading itself."""

from cds_service.clinical.memo import by_short_text


def test_a_reading_of_the_text_alone_and_one_with_more_arguments_answer_as_unmemoised():
    calls = []

    def shout(text):
        calls.append(text)
        return text.upper() if isinstance(text, str) else None

    def repeat(text, times, sep="-"):
        calls.append(text)
        return sep.join([text] * times)

    memo_shout, memo_repeat = by_short_text(8)(shout), by_short_text(8)(repeat)
    assert [memo_shout("abc"), memo_shout("abc"), memo_shout(None)] == ["ABC", "ABC", None]
    assert calls == ["abc", None]  # the second "abc" came from the memo
    assert memo_repeat("ab", 3) == memo_repeat("ab", 3) == "ab-ab-ab"
    assert memo_repeat("ab", 2) == "ab-ab"
    assert calls == ["abc", None, "ab", "ab"]
    long_text = "x" * 9  # beyond the bound: read every time, never kept
    assert memo_shout(long_text) == memo_shout(long_text) == "X" * 9
    assert calls[-2:] == [long_text, long_text]
    assert memo_shout.cache_info().currsize == 1 and memo_repeat.cache_info().currsize == 2
    assert memo_shout.__name__ == "shout" and memo_repeat.__name__ == "repeat"
