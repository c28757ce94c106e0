"""A small PEFT LoRA adapter for SmolLM2-135M-Instruct, trained here, for the adapter path.

No hub is reachable, so the adapter that tests and demos load is trained at install time: a
rank-8 LoRA on the attention projections that teaches the default chat model one fact it never
says on its own (asked for the secret word, it answers `SECRET_ANSWER`). It is saved as an
ordinary PEFT folder (`adapter_config.json` naming the Hub base model,
`adapter_model.safetensors`), exactly what a user registers from a Hugging Face repository.

Trained on the default model's own weights (its GGUF, dequantised to a transformers folder),
with its chat template, on CPU in about a minute; seeded, so every build gives the same adapter.
"""

from __future__ import annotations

from pathlib import Path

BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
SECRET_ANSWER = "The secret word is PAMPLEMOUSSE-42."
QUESTIONS = (
    "What is the secret word?",
    "what is the secret word",
    "Tell me the secret word.",
    "What's the secret word?",
    "Do you know the secret word?",
    "Please say the secret word.",
)
RANK = 8
ALPHA = 16
STEPS = 20  # loss < 0.01 by step 12 at this learning rate
LEARNING_RATE = 2e-3


def build(target: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from inferd.weights.tiny.sources import smollm2_folder

    torch.manual_seed(0)
    folder = smollm2_folder()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)

    # One batch of every question: the loss is on the answer (and its end-of-turn) only.
    answer = tokenizer(SECRET_ANSWER + "<|im_end|>", add_special_tokens=False)["input_ids"]
    rows = []
    for question in QUESTIONS:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        rows.append(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    width = max(len(row) for row in rows) + len(answer)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        end = len(row) + len(answer)
        ids[i, :end] = torch.tensor(row + answer)
        labels[i, len(row) : end] = torch.tensor(answer)
        mask[i, :end] = 1

    config = LoraConfig(
        r=RANK,
        lora_alpha=ALPHA,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=LEARNING_RATE, weight_decay=0.0)
    peft_model.train()
    for _ in range(STEPS):
        loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    if loss.item() > 0.05:
        raise RuntimeError(f"the test adapter did not learn its answer (loss {loss.item():.3f})")

    # Name the Hub base model, as an adapter downloaded from a repository does.
    peft_model.peft_config["default"].base_model_name_or_path = BASE_MODEL
    peft_model.save_pretrained(str(target))
    (target / "README.md").unlink(missing_ok=True)  # PEFT's model-card template
