"""Named entities with a spaCy pipeline (en_core_web_sm by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inferd.engines.task import BatchedTaskModel, TaskResult
from inferd.engines.tasks.media import input_text
from inferd.requests import TagTokens


class SpacyNERModel(BatchedTaskModel):
    max_batch = 32

    def __init__(self, path: Path, options: dict[str, Any]) -> None:
        import spacy

        # The package folder holds the pipeline one level down (name-version).
        folder = path if (path / "config.cfg").exists() else next(path.glob("*/config.cfg")).parent
        self.nlp = spacy.load(folder, exclude=["lemmatizer"])

    def info(self) -> dict[str, Any]:
        return {"labels": list(self.nlp.get_pipe("ner").labels)}

    def run_batch(self, batch: list[TagTokens]) -> list[TaskResult | Exception]:
        texts: list[str] = []
        out: list[TaskResult | Exception] = []
        for request in batch:
            try:
                texts.append(input_text(request.input))
            except Exception as exc:
                texts.append("")
                out.append(exc)
                continue
            out.append(None)  # type: ignore[arg-type]
        docs = list(self.nlp.pipe(texts))
        for i, doc in enumerate(docs):
            if out[i] is not None:
                continue
            # spaCy's greedy NER gives no probabilities: a found entity scores 1.
            entities = [
                {
                    "entity_group": ent.label_,
                    "score": 1.0,
                    "word": ent.text,
                    "start": ent.start_char,
                    "end": ent.end_char,
                }
                for ent in doc.ents
            ]
            out[i] = TaskResult(output={"results": entities}, input_tokens=len(doc))
        return out
