"""Sentiment with VADER, a rule-based English sentiment model (lexicon + rules, no weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inferd.engines.task import TaskModel, TaskResult
from inferd.engines.tasks.media import input_text
from inferd.requests import ClassifyText


class VaderSentimentModel(TaskModel):
    def __init__(self, path: Path, options: dict[str, Any]) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()

    def info(self) -> dict[str, Any]:
        return {"labels": ["POSITIVE", "NEUTRAL", "NEGATIVE"]}

    def run(self, request: ClassifyText) -> TaskResult:
        text = input_text(request.input)
        scores = self.analyzer.polarity_scores(text)
        results = sorted(
            (
                {"label": "POSITIVE", "score": scores["pos"]},
                {"label": "NEUTRAL", "score": scores["neu"]},
                {"label": "NEGATIVE", "score": scores["neg"]},
            ),
            key=lambda r: -r["score"],
        )
        return TaskResult(
            output={"results": results, "compound": scores["compound"]},
            input_tokens=len(text.split()),
        )
