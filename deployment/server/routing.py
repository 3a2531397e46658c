"""Several models in one server (#28): each serves one language pair, and a request goes to the model of its
(`source`, `target`).

A model's pair is given (`serve DIR=es:en`), or the one its card names (`language: [es, en]`), or `--source_lang` /
`--target_lang` (one model only). One model whose pair is unknown serves any codes, as before; with several, every
model needs its pair and no two may share one (`check_pairs`: a ValueError naming the model). `source: "auto"` picks
the source by language identification among the sources that translate into `target` (detection.py).

    router = Router([ModelRoute(es_en, "es", "en"), ModelRoute(en_es, "en", "es")])
    router.find("es", "en")        # es_en
    router.find("de", "en")        # ValidationError: unsupported language pair de→en: this server translates ...
    router.languages()             # [{"code": "en", "name": "en", "targets": ["es"]}, {"code": "es", ...}]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .validation import ValidationError, shown_name

ANY = "*"  # the pair of a single model whose languages are unknown: any code is accepted


@dataclass
class ModelRoute:
    """A model's `Translation` (app.py) and the pair it serves (None: unknown, any code accepted)."""

    translation: Any
    source: str | None
    target: str | None

    @property
    def label(self) -> str:
        """The pair as a metric label and in messages: es-en (any: languages unknown)."""
        return f"{self.source or ANY}-{self.target or ANY}"


def pair_of(name: str, given: tuple[str, str] | None, card: tuple[str | None, str | None],
            flags: tuple[str | None, str | None] = (None, None)) -> tuple[str | None, str | None]:
    """A model's (source, target): `given` (DIR=SOURCE:TARGET), else the flags (--source_lang/--target_lang), else
    its card's; either may stay None (unknown)."""
    if given:
        return given
    return flags[0] or card[0], flags[1] or card[1]


def check_pairs(named_pairs: list[tuple[str, str | None, str | None]]) -> None:
    """ValueError naming the model when several models are served and one's pair is unknown, or two share one."""
    if len(named_pairs) < 2:
        return
    seen: dict[tuple[str, str], str] = {}
    for name, source, target in named_pairs:
        if not source or not target:
            raise ValueError(f"{name}: its language pair is unknown (its model card names none): write "
                             f"{name}=SOURCE:TARGET")
        if (source, target) in seen:
            raise ValueError(f"{name} and {seen[source, target]} both translate {source}→{target}: serve one model "
                             "per language pair")
        seen[source, target] = name


class Router:
    """The routes of a server, found by (source, target) (module docstring)."""

    def __init__(self, routes: list[ModelRoute]):
        self.routes = routes

    @property
    def wildcard(self) -> bool:
        """One model whose languages are unknown: every request goes to it."""
        return len(self.routes) == 1 and not (self.routes[0].source and self.routes[0].target)

    def pairs(self) -> str:
        """The pairs served, for messages: es→en, en→es."""
        return ", ".join(f"{route.source or ANY}→{route.target or ANY}" for route in self.routes)

    def sources_into(self, target: str | None) -> list[str]:
        """The sources with a model into `target` (auto detection chooses among them)."""
        return [route.source for route in self.routes if route.source and route.target == target]

    def sources(self) -> list[str]:
        return sorted({route.source for route in self.routes if route.source})

    def find(self, source: str, target: str | None) -> ModelRoute:
        """The route of (source, target); ValidationError (400) naming the pairs served when there is none."""
        if len(self.routes) == 1:
            route = self.routes[0]
            if target is None and route.target:
                raise ValidationError(f"'target' is missing: this server translates {self.pairs()}",
                                      reason="missing_language")
            if (not route.source or source in ("auto", route.source)) and (not route.target or target == route.target):
                return route
        else:
            if target is None:
                raise ValidationError(f"'target' is missing: this server translates {self.pairs()}",
                                      reason="missing_language")
            for route in self.routes:
                if route.source == source and route.target == target:
                    return route
        raise ValidationError(f"unsupported language pair {shown_name(source)}→{shown_name(target)}: this server "
                              f"translates {self.pairs()}", reason="unsupported_pair")

    def languages(self) -> list[dict]:
        """LibreTranslate's `/languages`: every source with all its targets, [{code, name, targets}]."""
        if self.wildcard:
            route = self.routes[0]
            return [{"code": route.source or "auto", "name": route.source or "auto",
                     "targets": [route.target or "auto"]}]
        targets: dict[str, list[str]] = {}
        for route in self.routes:
            targets.setdefault(route.source, []).append(route.target)
        return [{"code": source, "name": source, "targets": sorted(targets[source])} for source in sorted(targets)]
