"""A small SmolVLM (Idefics3 architecture) for machines with no vision-language weights.

The language half is the real SmolLM2-135M-Instruct (the default chat model's weights,
converted from its GGUF), which is also SmolVLM-256M's decoder; the vision encoder and the
connector are a few small random layers. It speaks English, sees nothing meaningful, and is
saved as an ordinary Idefics3 folder (config, safetensors, processor), so the backend loads it
exactly as it loads HuggingFaceTB/SmolVLM-256M-Instruct from a folder or the hub cache.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_SIZE = 64
PATCH_SIZE = 8
SCALE_FACTOR = 2
IMAGE_SEQ_LEN = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2  # 16 tokens per image

# ChatML, as SmolLM2-Instruct was trained on, with image parts rendered as <image>: the
# processor expands each into the image's tokens.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build(target: Path) -> None:
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    from inferd.weights.tiny.sources import smollm2_folder

    torch.manual_seed(0)
    text_folder = smollm2_folder()
    tokenizer = AutoTokenizer.from_pretrained(str(text_folder))
    tokenizer.add_special_tokens(
        {
            "additional_special_tokens": [
                "<fake_token_around_image>",
                "<image>",
                "<global-img>",
                "<end_of_utterance>",
            ]
        }
    )
    text = AutoModelForCausalLM.from_pretrained(str(text_folder), dtype=torch.float32)
    config = Idefics3Config(
        vision_config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE,
        },
        text_config=text.config.to_dict(),
        scale_factor=SCALE_FACTOR,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        tie_word_embeddings=text.config.tie_word_embeddings,
    )
    model = Idefics3ForConditionalGeneration(config)
    model.model.text_model.load_state_dict(text.model.state_dict())
    model.lm_head.load_state_dict(text.lm_head.state_dict())
    model.resize_token_embeddings(len(tokenizer))
    model.generation_config.eos_token_id = text.generation_config.eos_token_id
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessorPil(
            size={"longest_edge": IMAGE_SIZE},
            max_image_size={"longest_edge": IMAGE_SIZE},
            do_image_splitting=False,
        ),
        tokenizer=tokenizer,
        image_seq_len=IMAGE_SEQ_LEN,
        chat_template=CHAT_TEMPLATE,
    )
    model.save_pretrained(target)
    processor.save_pretrained(target)
