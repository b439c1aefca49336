"""A request's decoded text: streaming detokenisation, stop strings, what may be sent yet."""

from __future__ import annotations


class TextTracker:
    """Feeds generated tokens through the tokenizer's incremental decoder.

    Stop strings are matched on the decoded text, so they are found even when split across
    tokens; the text is cut where the first one starts (the stop string is not returned). Until
    the request finishes, the last `max(len(stop)) - 1` characters are held back from streaming,
    since they could still become the start of a stop string.
    """

    def __init__(self, tokenizer, stop: list[str]):
        self.decoder = tokenizer.incremental_decoder() if tokenizer is not None else None
        self.stop = stop
        self.holdback = max((len(s) for s in stop), default=1) - 1
        self.text = ""
        self.emitted = 0

    def add(self, token_id: int) -> bool:
        """Append one token's text; True if a stop string now appears (text is cut there)."""
        if self.decoder is None:
            return False
        try:
            piece = self.decoder.feed(token_id)
        except ValueError:  # an id past the tokenizer's vocabulary (a padded embedding row): no text
            return False
        if not piece:
            return False
        search_from = max(0, len(self.text) - self.holdback)
        self.text += piece
        if self.stop:
            hits = [i for s in self.stop if (i := self.text.find(s, search_from)) >= 0]
            if hits:
                self.text = self.text[:min(hits)]
                return True
        return False

    def flush(self) -> None:
        """End of generation (not by stop string): add any incomplete trailing bytes."""
        if self.decoder is not None:
            self.text += self.decoder.finish()

    def take(self, final: bool) -> str:
        """Text not yet returned; holds back a possible stop-string prefix unless `final`."""
        end = len(self.text) if final else max(self.emitted, len(self.text) - self.holdback)
        out = self.text[self.emitted:end]
        self.emitted = end
        return out
