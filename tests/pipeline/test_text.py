import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from pipeline.text import control_fraction, normalize_text


def test_normalises_newlines_nul_and_composition():
    assert normalize_text("a\r\nb\rc\x00d") == "a\nb\ncd"
    assert normalize_text("e\u0301") == "\u00e9"
    assert normalize_text("x\ud800y\ufffe") == "xy"


def test_nul_between_combining_marks_cannot_break_idempotence():
    once = normalize_text("e\x00\u0301")
    assert once == "\u00e9" and normalize_text(once) == once


TRICKY = st.sampled_from(["\r", "\n", "\x00", "\ud800", "\udfff", "\u0301", "\ufffe", "e", "\u212b"])


@given(st.text(alphabet=st.one_of(st.characters(), TRICKY)))
def test_normalisation_is_idempotent_total_and_nfc(text):
    once = normalize_text(text)
    assert normalize_text(once) == once
    assert unicodedata.is_normalized("NFC", once)
    assert "\r" not in once and "\x00" not in once


def test_control_fraction_separates_text_from_binary():
    assert control_fraction("plain text\twith tabs\n") == 0.0
    assert control_fraction("\x01\x02\x03abc") == 0.5
