"""Multi-document contexts (HotpotQA style): titled documents -> one context text with feature spans.

The context is the documents' blocks ``"{title}\\n{body}"`` joined by blank lines. Features are
whole blocks (unit "documents": a masked document loses its title too) or the bodies' sentences
(unit "sentences": titles stay, as template text). A document is ``{"title": str, "text": str}``
(its sentences found by ``spex_ray.text.featurize``) or ``{"title": str, "sentences": [str]}``
(HotpotQA's own sentence split, joined by single spaces).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from connectors.base import Example
from spex_ray.text import featurize

DocumentUnit = Literal["documents", "sentences"]
DOCUMENT_UNITS: tuple[str, ...] = ("documents", "sentences")
DOCUMENT_SEPARATOR = "\n\n"


def documents_context(
    documents: Sequence[Mapping[str, Any]],
) -> tuple[str, list[tuple[int, int]], list[tuple[int, int]]]:
    """``(text, document spans, sentence spans)`` of the context; spans are ``[start, end)`` in text.

    Raises ValueError for no documents, a document without a string title, or without a
    non-empty ``text`` / ``sentences``.
    """
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence) or not documents:
        raise ValueError("documents must be a non-empty list of {title, text} records")
    text = ""
    document_spans: list[tuple[int, int]] = []
    sentence_spans: list[tuple[int, int]] = []
    for position, document in enumerate(documents):
        title, body, spans = _document(document, position)
        if text:
            text += DOCUMENT_SEPARATOR
        start = len(text)
        text += title + "\n"
        sentence_spans.extend((len(text) + s, len(text) + e) for s, e in spans)
        text += body
        document_spans.append((start, len(text)))
    return text, document_spans, sentence_spans


def documents_example(
    example_id: str,
    documents: Sequence[Mapping[str, Any]],
    unit: DocumentUnit = "sentences",
    *,
    max_features: int | None = None,
    question: str | None = None,
    target: str | None = None,
) -> Example:
    """An Example whose text is the documents' context and whose features are documents or sentences."""
    if unit not in DOCUMENT_UNITS:
        raise ValueError(f"unknown document unit {unit!r}; expected one of {', '.join(DOCUMENT_UNITS)}")
    text, document_spans, sentence_spans = documents_context(documents)
    spans = document_spans if unit == "documents" else sentence_spans
    return Example.from_text(
        example_id, text, "spans", spans=spans, max_features=max_features, question=question, target=target
    )


def _document(document: Any, position: int) -> tuple[str, str, list[tuple[int, int]]]:
    """The title, the body and the sentence spans within the body."""
    if not isinstance(document, Mapping):
        raise ValueError(f"document {position} must be a record with a title and a text")
    title = document.get("title")
    if not isinstance(title, str) or not title.strip() or "\n" in title:
        raise ValueError(f"document {position} needs a one-line, non-empty string 'title'")
    title = title.strip()
    if "sentences" not in document:
        body = document.get("text")
        if not isinstance(body, str) or not body.strip():
            raise ValueError(f"document {position} needs a non-empty string 'text' (or 'sentences')")
        body = body.strip()
        return title, body, featurize(body, "sentences")[1]
    sentences = document["sentences"]
    if isinstance(sentences, str) or not isinstance(sentences, Sequence) or not sentences:
        raise ValueError(f"document {position}: 'sentences' must be a non-empty list of strings")
    body, spans = "", []
    for index, sentence in enumerate(sentences):
        if not isinstance(sentence, str) or not sentence.strip():
            raise ValueError(f"document {position}: sentence {index} is empty or not a string")
        if body:
            body += " "
        spans.append((len(body), len(body) + len(sentence.strip())))
        body += sentence.strip()
    return title, body, spans
