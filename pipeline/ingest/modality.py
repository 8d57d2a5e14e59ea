"""Which modality a series or file holds: DICOM tags + configurable patterns, BIDS suffixes, file-name tokens."""

from __future__ import annotations

import re
from collections.abc import Iterable

CT = "CT"
# BIDS suffixes and common file-name tokens -> modality (lower-case keys).
NAME_TOKENS = {
    "t1w": "T1w",
    "t1": "T1w",
    "t2w": "T2w",
    "t2": "T2w",
    "pdw": "PDw",
    "pd": "PDw",
    "flair": "FLAIR",
    "ct": CT,
}


class ModalityMatcher:
    """Case-insensitive regular expressions per modality; the first modality (in config order) that matches wins."""

    def __init__(self, patterns: dict[str, list[str]]):
        """`patterns` as validated by `IngestConfig` (names letters/digits, regexes that compile)."""
        self.patterns = [(m, [re.compile(rx, re.IGNORECASE) for rx in rxs]) for m, rxs in patterns.items()]

    @property
    def modalities(self) -> list[str]:
        return [m for m, _ in self.patterns]

    def match(self, texts: Iterable[str]) -> tuple[str, re.Match[str], str] | None:
        """(modality, match, text) of the first modality with a pattern found in any of `texts`, else None."""
        texts = [t for t in texts if t]
        for modality, regexes in self.patterns:
            for rx in regexes:
                for text in texts:
                    m = rx.search(text)
                    if m:
                        return modality, m, text
        return None

    def from_token(self, token: str) -> str | None:
        """Modality named by a BIDS suffix or file-name token (`T1w`, `t2`, `FLAIR`, `CT`, or a configured name)."""
        low = token.lower()
        for modality in self.modalities:
            if low == modality.lower():
                return modality
        return NAME_TOKENS.get(low)
