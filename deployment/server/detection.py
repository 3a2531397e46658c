"""Language identification for `source: "auto"` and `POST /detect` (#28), with py3langid (langid.py's naive Bayes
model over byte n-grams, 97 languages; the model ships inside the package: nothing is downloaded).

Only the languages the server can translate from are candidates (`Detector(["es", "en"])`): a Spanish post is never
called Galician when the server has no Galician model. Codes py3langid does not know (a made-up code, a variant such
as `pt-BR`: its base `pt` is used) cannot be told apart; a server with one candidate answers it with confidence 100.
HTML is identified on its text (`text_of`), not its markup. Confidences are percentages (0-100), as LibreTranslate's.

    detector = Detector(["es", "en"])
    detector.rank("¿Dónde está la biblioteca?")   # [{"confidence": 99.8, "language": "es"}, {"confidence": 0.2, ...}]
"""

from __future__ import annotations

import threading

from bs4 import BeautifulSoup

SHORT = 40  # characters: a shorter text of a list is identified with all the list's texts together (LibreTranslate)


class Detector:
    """py3langid restricted to `languages` (the server's sources)."""

    def __init__(self, languages: list[str]):
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self.languages = list(dict.fromkeys(languages))
        self.labels: dict[str, str] = {}  # a served code py3langid knows (pt-BR as pt): {its label: the served code}
        self.identifier = None
        if len({base(code) for code in self.languages}) > 1:  # something to tell apart: load the model
            self.identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
            known = set(self.identifier.labels)
            self.labels = {base(code): code for code in self.languages if base(code) in known}
            if len(self.labels) > 1:
                self.identifier.set_languages(sorted(self.labels))
        self.lock = threading.Lock()  # (numpy work in a thread of the event loop's pool)

    def rank(self, text: str, among: list[str] | None = None) -> list[dict]:
        """[{confidence, language}] of the candidates (`among`, default all; those py3langid cannot tell apart
        follow with confidence 0), best first."""
        candidates = [code for code in (among or self.languages) if code in self.languages]
        known = [code for code in candidates if base(code) in self.labels]
        if len(known) < 2:  # nothing to tell apart
            order = known + [code for code in candidates if code not in known]
            return [{"confidence": 100.0 if index == 0 else 0.0, "language": code} for index, code in enumerate(order)]
        with self.lock:
            scores = dict(self.identifier.rank(text))
        total = sum(scores.get(base(code), 0.0) for code in known) or 1.0
        ranked = sorted(known, key=lambda code: -scores.get(base(code), 0.0))
        answer = [{"confidence": round(100 * scores.get(base(code), 0.0) / total, 2), "language": code}
                  for code in ranked]
        return answer + [{"confidence": 0.0, "language": code} for code in candidates if code not in known]

    def detect_each(self, texts: list[str], among: list[str] | None = None) -> list[dict]:
        """The best candidate of each text; a text shorter than `SHORT` characters gets that of all texts together
        (too little to go on by itself)."""
        together = None
        answers = []
        for text in texts:
            if len(text.strip()) < SHORT:
                if together is None:
                    together = self.rank(" ".join(texts), among)[0]
                answers.append(together)
            else:
                answers.append(self.rank(text, among)[0])
        return answers


def base(code: str) -> str:
    """The language of a code: pt for pt-BR and pt_BR, zh for zh-Hant."""
    return code.replace("_", "-").split("-")[0].lower()


def text_of(html: str) -> str:
    """The text of an HTML fragment (what is identified, not the tags and attributes)."""
    return BeautifulSoup(html, "html.parser").get_text(" ")
