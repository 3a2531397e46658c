"""The Hugging Face Hub model card of a trained model folder (the logic is in `card.py`)."""

from .card import CARD_FILE, GENERATED_CARD_MARKER, card_text, front_matter, is_generated_card, render_card

__all__ = ["CARD_FILE", "GENERATED_CARD_MARKER", "card_text", "front_matter", "is_generated_card", "render_card"]
