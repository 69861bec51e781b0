"""Subjects: every valid name maps to one valid subject token, and back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peat_sync.shared.subjects import NotADocumentSubject, Subjects, decode_token, encode_token

# What a valid collection or doc_id can hold: any text without surrogates.
names = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=40)


@given(names)
def test_a_token_decodes_to_its_name(name: str) -> None:
    assert decode_token(encode_token(name)) == name


@given(names)
def test_a_token_is_a_valid_subject_token(name: str) -> None:
    token = encode_token(name)
    assert token
    assert not {".", "*", ">"} & set(token)
    assert all(character.isprintable() and not character.isspace() for character in token)
    assert token.isascii()


@given(names, names)
def test_distinct_names_get_distinct_tokens(first: str, second: str) -> None:
    if first != second:
        assert encode_token(first) != encode_token(second)


def test_plain_names_read_as_they_are() -> None:
    assert encode_token("fleet_01-a") == "fleet_01-a"
    assert encode_token("a.b") == "a=2Eb"
    assert encode_token("x=y") == "x=3Dy"
    assert encode_token("é") == "=C3=A9"


@pytest.mark.parametrize("token", ["", "a=", "a=2", "a=zz", "a=2e", "a b", "a.b"])
def test_a_token_peat_sync_cannot_have_made_is_refused(token: str) -> None:
    with pytest.raises(ValueError, match="is not an encoded name"):
        decode_token(token)


@given(names, names)
def test_a_document_subject_parses_back(collection: str, doc_id: str) -> None:
    subjects = Subjects("PEAT")
    subject = subjects.document(collection, doc_id)
    assert subject.startswith("peat.PEAT.")
    assert subjects.parse(subject) == (collection, doc_id)


@pytest.mark.parametrize(
    "subject", ["peat.PEAT.c", "peat.PEAT.c.d.e", "peat.OTHER.c.d", "peat.PEAT.c.a=zz"]
)
def test_a_subject_that_names_no_document_is_refused(subject: str) -> None:
    with pytest.raises(NotADocumentSubject):
        Subjects("PEAT").parse(subject)
