"""What the web page, `/health` and `/languages` show about the model: its card's name, direction and scores."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ModelInfo:
    """What the web page and `/health` show about the model: its card's name, direction and scores."""

    name: str
    source_lang: str | None = None
    target_lang: str | None = None
    metrics: list[dict] = field(default_factory=list)  # {"name", "split", "value"}


def read_model_info(model_dir: str | Path) -> ModelInfo:
    """Name, languages and scores from the model card (README.md front matter) when the folder has one."""
    from ...hub_card import front_matter

    card = Path(model_dir) / "README.md"
    meta = front_matter(card.read_text(encoding="utf-8")) if card.is_file() else {}
    languages = meta.get("language") or []
    index = (meta.get("model-index") or [{}])[0]
    metrics = [{"name": metric.get("name") or metric.get("type"), "split": result.get("dataset", {}).get("split"),
                "value": metric.get("value")}
               for result in index.get("results", []) for metric in result.get("metrics", [])]
    return ModelInfo(name=index.get("name") or Path(model_dir).resolve().name,
                     source_lang=languages[0] if len(languages) == 2 else None,
                     target_lang=languages[1] if len(languages) == 2 else None, metrics=metrics)
