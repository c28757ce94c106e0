"""Small transformers models for fill-mask, zero-shot image classification and object
detection, with random weights and real tokenizers (all-MiniLM-L6-v2's WordPiece vocabulary,
which ships as a package). Each is saved as an ordinary transformers folder, loaded by the
same Auto* code that loads bert-base, CLIP or YOLOS folders."""

from __future__ import annotations

from pathlib import Path

COCO_LABELS = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
]  # fmt: skip


def _tokenizer():
    from transformers import AutoTokenizer

    from inferd.weights.tiny.sources import minilm_folder

    return AutoTokenizer.from_pretrained(str(minilm_folder()))


def build_masked_lm(target: Path) -> None:
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    tokenizer = _tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
    )
    BertForMaskedLM(config).save_pretrained(target)
    tokenizer.save_pretrained(target)


def build_clip(target: Path) -> None:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    torch.manual_seed(0)
    tokenizer = _tokenizer()
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.cls_token_id,
            "eos_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 16,
        },
        projection_dim=32,
    )
    CLIPModel(config).save_pretrained(target)
    tokenizer.model_max_length = 77
    tokenizer.save_pretrained(target)
    CLIPImageProcessorPil(
        size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}
    ).save_pretrained(target)


def build_detector(target: Path) -> None:
    import torch
    from transformers import YolosConfig, YolosForObjectDetection, YolosImageProcessorPil

    torch.manual_seed(0)
    config = YolosConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        image_size=[128, 128],
        patch_size=16,
        num_detection_tokens=10,
        id2label=dict(enumerate(COCO_LABELS)),
        label2id={label: i for i, label in enumerate(COCO_LABELS)},
    )
    YolosForObjectDetection(config).save_pretrained(target)
    YolosImageProcessorPil(size={"shortest_edge": 128, "longest_edge": 256}).save_pretrained(target)
