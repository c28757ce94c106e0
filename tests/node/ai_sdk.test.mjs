// The Vercel AI SDK's DeepInfra provider pointed at inferd: images go to
// `${baseURL}/inference/${model}` (width and height sent as strings), chat to
// `${baseURL}/openai/chat/completions`.
import assert from "node:assert/strict";
import { test } from "node:test";

import { createDeepInfra } from "@ai-sdk/deepinfra";
import { generateImage, generateText } from "ai";

import { CHAT_MODEL, IMAGE_MODEL, KEY, URL_, isPng } from "./env.mjs";

const deepinfra = createDeepInfra({ apiKey: KEY, baseURL: `${URL_}/v1` });

test("AI SDK generateImage", async () => {
  const { image, images } = await generateImage({
    model: deepinfra.image(IMAGE_MODEL),
    prompt: "A red square on a white background",
    size: "64x64",
    providerOptions: { deepinfra: { num_inference_steps: 2 } },
    maxRetries: 0,
  });
  assert.equal(images.length, 1);
  assert.equal(image.mediaType, "image/png");
  assert.ok(isPng(image.uint8Array), "not a PNG");
});

test("AI SDK generateText on the chat model", async () => {
  const { text, usage, finishReason } = await generateText({
    model: deepinfra(CHAT_MODEL),
    prompt: "Say hello.",
    system: "You are brief.",
    maxOutputTokens: 8,
    maxRetries: 0,
  });
  assert.equal(typeof text, "string");
  assert.ok(text.length > 0, "empty reply");
  assert.ok(usage.inputTokens > 0 && usage.outputTokens > 0, JSON.stringify(usage));
  assert.ok(["stop", "length"].includes(finishReason), finishReason);
});
