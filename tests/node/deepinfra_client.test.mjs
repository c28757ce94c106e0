// The seed page's TextToImage example (deepinfra-docs_deep_infra_api.md) with the official
// `deepinfra` npm client. The client posts to ROOT_URL + model unless the model is a full URL,
// which is how it is pointed at inferd.
import assert from "node:assert/strict";
import { createWriteStream } from "node:fs";
import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { finished } from "node:stream/promises";
import { test } from "node:test";

import { TextToImage } from "deepinfra";

import { IMAGE_MODEL, KEY, URL_, isPng } from "./env.mjs";

test("deepinfra TextToImage: generate, then fetch(response.images[0])", async () => {
  const MODEL = `${URL_}/v1/inference/${IMAGE_MODEL}`;
  const model = new TextToImage(MODEL, KEY);
  const response = await model.generate({
    prompt: "a burger with a funny hat on the beach",
  });
  assert.equal(response.images.length, 1);
  // A data URL: fetch() reads it without a second request, and nothing is stored server-side.
  assert.match(response.images[0], /^data:image\/png;base64,/);
  const result = await fetch(response.images[0]);
  assert.ok(result.ok && result.body, `fetch failed: ${result.status}`);
  // As on the page: stream the body into image.png.
  const path = join(await mkdtemp(join(tmpdir(), "inferd-node-")), "image.png");
  const writer = createWriteStream(path);
  Readable.fromWeb(result.body).pipe(writer);
  await finished(writer);
  assert.ok(isPng(await readFile(path)), "image.png is not a PNG");
});
