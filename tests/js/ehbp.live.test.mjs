// Format H (EHBP) against a real flask-hybrid server (FH_BASE_URL, started by
// tests/test_browser_ehbp.py with the demo app plus /digest and /download/<n>). Node's fetch
// streams uploads over HTTP/1.1 (chunked), which Chromium does not: the streamed upload path of
// the browser module is exercised here; the rest runs in Chromium too.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";

import { HybridClient } from "../../flask_hybrid/static/hybrid.js";

const BASE = process.env.FH_BASE_URL;
const MiB = 1024 * 1024;
const block = Uint8Array.from({ length: 65536 }, (_, i) => i % 256);

test("a ReadableStream body is sealed and sent as it is read (duplex half, chunked)", { skip: !BASE }, async () => {
  const client = await HybridClient.connect({ format: "ehbp", baseUrl: BASE });
  assert.match(client.kid, /^[0-9a-f]{64}$/);
  let pulls = 0;
  const count = 80; // 5 MiB in 64 KiB reads
  const body = new ReadableStream({
    pull(controller) {
      if (pulls++ === count) controller.close();
      else controller.enqueue(block.slice());
    },
  });
  const res = await client.fetch("/digest", { method: "POST", body });
  assert.equal(res.status, 200);
  const expected = createHash("sha256");
  for (let i = 0; i < count; i++) expected.update(block);
  assert.deepEqual(await res.json(), { size: count * 65536, sha256: expected.digest("hex"), format: "H" });
  const ex = client.lastExchange;
  assert.equal(ex.ehbp.streamedUpload, true);
  assert.equal(ex.ehbp.requestFrames.length, count);
  assert.ok(ex.ehbp.requestFrames.every((n) => n === 65536 + 16));
  assert.equal(ex.requestHeaders["ehbp-encapsulated-key"], ex.ehbp.encapsulatedKey);
});

test("a streamed answer is read frame by frame", { skip: !BASE }, async () => {
  const client = await HybridClient.connect({ format: "ehbp", baseUrl: BASE });
  // A bodiless GET is plain in EHBP: send a body so that the answer is sealed.
  const res = await client.fetch(`/download/${4 * MiB}`, { method: "POST", body: "x" });
  assert.equal(res.status, 200);
  let chunks = 0;
  let size = 0;
  for await (const chunk of res.body) {
    for (let i = 0; i < chunk.length; i++) assert.equal(chunk[i], (size + i) % 256);
    chunks += 1;
    size += chunk.length;
  }
  assert.equal(size, 4 * MiB);
  assert.ok(chunks >= 64, `${chunks} chunks`);
  assert.equal(client.lastExchange.ehbp.responseFrames.length, 64);
});
