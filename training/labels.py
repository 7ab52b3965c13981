"""Emotion classes and every dataset's mapping to them: the one source of truth.

The canonical order is the original study's: anger, fear, happy, sad, surprise, neutral, disgust.
Phase 1 (FER-2013) uses the first six (FER-2013's 'disgust' is dropped: it has ~1.5% of the
images); Phase 2 (RAF-DB) adds disgust as the seventh class.
"""

from __future__ import annotations

from collections.abc import Sequence

from emobench_common.errors import EmobenchError

EMOTIONS: tuple[str, ...] = ("anger", "fear", "happy", "sad", "surprise", "neutral", "disgust")
PHASE1_CLASSES: tuple[str, ...] = EMOTIONS[:6]
PHASE2_CLASSES: tuple[str, ...] = EMOTIONS

# FER-2013 `emotion` column: 0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral.
FER2013_IDS: dict[int, str] = {
    0: "anger", 1: "disgust", 2: "fear", 3: "happy", 4: "sad", 5: "surprise", 6: "neutral",
}
# RAF-DB basic `list_patition_label.txt`: 1 Surprise, 2 Fear, 3 Disgust, 4 Happiness, 5 Sadness,
# 6 Anger, 7 Neutral.
RAFDB_IDS: dict[int, str] = {
    1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "anger", 7: "neutral",
}
FER2013_ID_OF: dict[str, int] = {name: i for i, name in FER2013_IDS.items()}
RAFDB_ID_OF: dict[str, int] = {name: i for i, name in RAFDB_IDS.items()}

# Folder names met in the wild (FER-2013 image folders use "angry", Kaggle RAF-DB copies use
# "happiness", photo collections use adjectives).
_ALIASES: dict[str, str] = {
    "anger": "anger", "angry": "anger", "mad": "anger",
    "fear": "fear", "fearful": "fear", "scared": "fear", "afraid": "fear",
    "happy": "happy", "happiness": "happy", "joy": "happy",
    "sad": "sad", "sadness": "sad",
    "surprise": "surprise", "surprised": "surprise",
    "neutral": "neutral", "calm": "neutral",
    "disgust": "disgust", "disgusted": "disgust",
}


class UnknownEmotionError(EmobenchError):
    """A label (name or id) that no mapping knows."""


def canonical_emotion(name: str) -> str:
    """Map a folder or label name (any case, common synonyms) to its canonical emotion.

    Raises:
        UnknownEmotionError: when the name is not an emotion emobench knows.
    """
    key = name.strip().lower()
    if key not in _ALIASES:
        raise UnknownEmotionError(
            f"unknown emotion label {name!r}",
            hint=f"use one of {', '.join(EMOTIONS)} (or a common synonym such as 'angry', 'happiness')",
        )
    return _ALIASES[key]


def is_emotion(name: str) -> bool:
    """Whether ``name`` is an emotion (or a synonym) that ``canonical_emotion`` accepts."""
    return name.strip().lower() in _ALIASES


def resolve_classes(class_names: Sequence[str] | None, num_classes: int | None = None) -> tuple[str, ...]:
    """Resolve the task's classes: explicit names (canonicalised, in the given order) or the
    canonical first ``num_classes`` (6 for Phase 1, 7 for Phase 2)."""
    if class_names:
        names = tuple(canonical_emotion(n) for n in class_names)
        if len(set(names)) != len(names):
            raise EmobenchError(f"duplicate class names in {list(class_names)}")
        return names
    n = 7 if num_classes is None else num_classes
    if not 1 <= n <= len(EMOTIONS):
        raise EmobenchError(f"num_classes must be between 1 and {len(EMOTIONS)}, got {n}")
    return EMOTIONS[:n]
