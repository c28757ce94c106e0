"""OCR with RapidOCR (PP-OCRv4 detection + recognition, ONNX models bundled in the package)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inferd.engines.task import TaskModel, TaskResult
from inferd.engines.tasks.media import input_image
from inferd.requests import ReadText


class RapidOCRModel(TaskModel):
    def __init__(self, path: Path, options: dict[str, Any]) -> None:
        from rapidocr_onnxruntime import RapidOCR

        threads = int(options.get("n_threads", 2))
        self.engine = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)

    def run(self, request: ReadText) -> TaskResult:
        import numpy as np

        image = input_image(request.image)
        found, _ = self.engine(np.asarray(image))
        lines = [
            {
                "text": text,
                "score": round(float(score), 4),
                "box": [[round(float(x), 1), round(float(y), 1)] for x, y in box],
            }
            for box, text, score in found or ()
        ]
        return TaskResult(
            output={"text": _reading_order(lines), "lines": lines},
            units={"images": 1},
        )


def _reading_order(lines: list[dict[str, Any]]) -> str:
    """Detected boxes as text: boxes that overlap vertically by half form one line, read
    left to right; lines top to bottom."""
    rows: list[list[dict[str, Any]]] = []
    for line in sorted(lines, key=lambda item: _span(item)[0]):
        top, bottom = _span(line)
        if rows:
            r_top, r_bottom = _span(rows[-1][0])
            overlap = min(bottom, r_bottom) - max(top, r_top)
            if overlap > 0.5 * min(bottom - top, r_bottom - r_top):
                rows[-1].append(line)
                continue
        rows.append([line])
    return "\n".join(
        " ".join(item["text"].strip() for item in sorted(row, key=lambda i: i["box"][0][0]))
        for row in rows
    )


def _span(line: dict[str, Any]) -> tuple[float, float]:
    ys = [y for _, y in line["box"]]
    return min(ys), max(ys)
