// Format H (EHBP) in the browser module, offline: the HPKE key schedule composed from Web Crypto
// against RFC 9180's known answers, EHBP's own vectors, and byte compatibility with the npm `ehbp`
// package (0.1.7) and its HPKE (`hpke` over @panva/hpke-noble, an independent implementation):
// our frames opened by its recipient context, its sealed response frames opened by us.
//
//   node --test tests/js/ehbp.test.mjs        (FH_VECTORS_DIR overrides the vectors folder)

import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";

import { CipherSuite } from "hpke";
import { AEAD_AES_256_GCM, KDF_HKDF_SHA256, KEM_DHKEM_X25519_HKDF_SHA256 } from "@panva/hpke-noble";
import * as npmEhbp from "ehbp";

import {
  EHBP,
  EhbpRequestSealer,
  EhbpResponseOpener,
  HybridError,
  b64urlEncode,
  bytesToHex,
  deriveEhbpResponseKeys,
  hexToBytes,
  openEhbpResponseStream,
  parseKeyConfig,
  setupHpkeSender,
} from "../../flask_hybrid/static/hybrid.js";

const vectorsDir = process.env.FH_VECTORS_DIR
  ? pathToFileURL(process.env.FH_VECTORS_DIR.replace(/\/?$/, "/"))
  : new URL("../vectors/", import.meta.url);
const load = async (name) => JSON.parse(await readFile(new URL(name, vectorsDir), "utf8"));
const subtle = globalThis.crypto.subtle;
const encoder = new TextEncoder();

/** A fixed X25519 key pair (RFC 9180's skEm / pkEm) as Web Crypto keys, through a JWK. */
async function importX25519Pair(skHex, pkHex) {
  const x = b64urlEncode(hexToBytes(pkHex));
  const privateKey = await subtle.importKey(
    "jwk",
    { kty: "OKP", crv: "X25519", d: b64urlEncode(hexToBytes(skHex)), x },
    { name: "X25519" },
    false,
    ["deriveBits"],
  );
  const publicKey = await subtle.importKey("raw", hexToBytes(pkHex), { name: "X25519" }, true, []);
  return { privateKey, publicKey };
}

const isInvalidResponse = (err) => err instanceof HybridError && err.code === "invalid_response";

describe("RFC 9180 known answers (base mode, X25519 / HKDF-SHA256 / AES-256-GCM)", () => {
  test("enc, all 257 encryptions in sequence and the 3 exports", async () => {
    const v = await load("hpke/rfc9180-x25519-sha256-aes256gcm-base.json");
    assert.deepEqual([v.mode, v.kem_id, v.kdf_id, v.aead_id], [0, 32, 1, 2]);
    const context = await setupHpkeSender(hexToBytes(v.pkRm), hexToBytes(v.info), {
      ephemeralKeyPair: await importX25519Pair(v.skEm, v.pkEm),
    });
    assert.equal(bytesToHex(context.enc), v.enc);
    assert.equal(v.encryptions.length, 257);
    for (const [seq, e] of v.encryptions.entries()) {
      assert.equal(context.seq, seq);
      const ct = await context.seal(hexToBytes(e.pt), hexToBytes(e.aad));
      assert.equal(bytesToHex(ct), e.ct, `encryption ${seq}`);
    }
    assert.equal(v.exports.length, 3); // (the vectors README says 5; the file holds 3)
    for (const e of v.exports) {
      const value = await context.export(hexToBytes(e.exporter_context), e.L);
      assert.equal(bytesToHex(value), e.exported_value);
    }
  });

  test("a low-order public key is refused", async () => {
    await assert.rejects(setupHpkeSender(new Uint8Array(32), encoder.encode("x")), isInvalidResponse);
  });
});

describe("EHBP vectors", () => {
  test("derive.json: response key and base nonce", async () => {
    const v = await load("ehbp/derive.json");
    const { key, baseNonce } = await deriveEhbpResponseKeys(
      hexToBytes(v.exportedSecret),
      hexToBytes(v.requestEnc),
      hexToBytes(v.responseNonce),
    );
    assert.equal(bytesToHex(key), v.derivedKey);
    assert.equal(bytesToHex(baseNonce), v.derivedNonceBase);
  });

  test("response-decryption.json: one framed response, whole and byte by byte", async () => {
    const v = await load("ehbp/response-decryption.json");
    const wire = hexToBytes(v.encryptedResponse);
    const args = [hexToBytes(v.exportedSecret), hexToBytes(v.requestEnc), hexToBytes(v.responseNonce)];
    const whole = await EhbpResponseOpener.create(...args);
    assert.deepEqual((await whole.feed(wire)).map(bytesToHex), [v.plaintext]);
    whole.finish();
    const split = await EhbpResponseOpener.create(...args);
    const out = [];
    for (const byte of wire) out.push(...(await split.feed(Uint8Array.of(byte))));
    split.finish();
    assert.deepEqual(out.map(bytesToHex), [v.plaintext]);
  });

  test("a flipped byte, a truncated body and a frame over the cap are refused", async () => {
    const v = await load("ehbp/response-decryption.json");
    const wire = hexToBytes(v.encryptedResponse);
    const args = [hexToBytes(v.exportedSecret), hexToBytes(v.requestEnc), hexToBytes(v.responseNonce)];
    const flipped = wire.slice();
    flipped[10] ^= 1;
    const a = await EhbpResponseOpener.create(...args);
    await assert.rejects(a.feed(flipped), isInvalidResponse); // its only frame
    await assert.rejects(a.feed(new Uint8Array(0)), isInvalidResponse); // stays failed
    const b = await EhbpResponseOpener.create(...args);
    assert.deepEqual(await b.feed(wire.subarray(0, wire.length - 1)), []);
    assert.throws(() => b.finish(), isInvalidResponse);
    const c = await EhbpResponseOpener.create(...args, { maxFrame: 16 });
    await assert.rejects(c.feed(wire), isInvalidResponse);
  });
});

describe("key_config", () => {
  const config = (suites, extra = []) =>
    Uint8Array.from([0x07, 0x00, 0x20, ...new Array(32).fill(9), 0x00, suites.length, ...suites, ...extra]);
  test("one suite, or ours among several", () => {
    assert.deepEqual(parseKeyConfig(config([0, 1, 0, 2])), { keyId: 7, publicKey: new Uint8Array(32).fill(9) });
    assert.equal(parseKeyConfig(config([0, 1, 0, 1, 0, 1, 0, 2])).keyId, 7);
  });
  test("refused: another suite, another KEM, trailing bytes, truncation", () => {
    assert.throws(() => parseKeyConfig(config([0, 1, 0, 1])), isInvalidResponse);
    const otherKem = config([0, 1, 0, 2]);
    otherKem[2] = 0x21;
    assert.throws(() => parseKeyConfig(otherKem), isInvalidResponse);
    assert.throws(() => parseKeyConfig(config([0, 1, 0, 2], [0])), isInvalidResponse);
    assert.throws(() => parseKeyConfig(config([0, 1, 0, 2]).subarray(0, 40)), isInvalidResponse);
  });
});

describe("byte compatibility with the npm ehbp package and its HPKE", () => {
  const suite = new CipherSuite(KEM_DHKEM_X25519_HKDF_SHA256, KDF_HKDF_SHA256, AEAD_AES_256_GCM);

  /** The server's half done by the npm packages: open our frames, seal an answer as npm does. */
  async function npmServer(keyPair, sealer, wire, answerParts) {
    const ctx = await suite.SetupRecipient(keyPair, hexToBytes(sealer.headerValue), {
      info: encoder.encode(npmEhbp.HPKE_REQUEST_INFO),
    });
    const plaintexts = [];
    for (let at = 0; at < wire.length; ) {
      const length = new DataView(wire.buffer, wire.byteOffset + at, 4).getUint32(0);
      plaintexts.push(await ctx.Open(wire.subarray(at + 4, at + 4 + length)));
      at += 4 + length;
    }
    const secret = await ctx.Export(encoder.encode(npmEhbp.EXPORT_LABEL), npmEhbp.EXPORT_LENGTH);
    const responseNonce = globalThis.crypto.getRandomValues(new Uint8Array(32));
    const km = await npmEhbp.deriveResponseKeys(secret, hexToBytes(sealer.headerValue), responseNonce);
    const frames = [];
    for (const [seq, part] of answerParts.entries()) {
      const ct = await npmEhbp.encryptChunk(km, seq, part);
      const prefix = new Uint8Array(4);
      new DataView(prefix.buffer).setUint32(0, ct.length);
      frames.push(prefix, ct);
    }
    return { plaintexts, nonceHeader: npmEhbp.bytesToHex(responseNonce), frames };
  }

  test("our 64 KiB frames open under npm's recipient; npm's sealed answer opens under ours", async () => {
    const keyPair = await suite.GenerateKeyPair(true);
    const publicKey = await suite.SerializePublicKey(keyPair.publicKey);
    const sealer = await EhbpRequestSealer.create(publicKey);
    assert.match(sealer.headerValue, /^[0-9a-f]{64}$/);
    const body = Uint8Array.from({ length: 150_000 }, (_, i) => i % 251);
    const wire = await sealer.seal(body);
    assert.deepEqual(sealer.frames, [EHBP.frameSize + 16, EHBP.frameSize + 16, 150_000 - 2 * EHBP.frameSize + 16]);
    assert.equal(wire.length, 150_000 + 3 * 20);
    const answer = [encoder.encode("echo:"), new Uint8Array(0), body.subarray(0, 70_000)];
    const npm = await npmServer(keyPair, sealer, wire, answer);
    assert.deepEqual(Buffer.concat(npm.plaintexts), Buffer.from(body));
    const opener = await sealer.responseOpener(npm.nonceHeader);
    const opened = [];
    for (const part of npm.frames) opened.push(...(await opener.feed(part)));
    opener.finish();
    assert.deepEqual(Buffer.concat(opened), Buffer.concat(answer));
    assert.deepEqual(opener.frames, [5 + 16, 16, 70_000 + 16]);
  });

  test("npm's own decrypting stream reads what we would send as a response", async () => {
    // The reverse check of the response framing: our nonce arithmetic against npm's decryptChunk.
    const secret = globalThis.crypto.getRandomValues(new Uint8Array(32));
    const enc = globalThis.crypto.getRandomValues(new Uint8Array(32));
    const nonce = globalThis.crypto.getRandomValues(new Uint8Array(32));
    const ours = await deriveEhbpResponseKeys(secret, enc, nonce);
    const theirs = await npmEhbp.deriveResponseKeys(secret, enc, nonce);
    assert.equal(bytesToHex(ours.key), bytesToHex(theirs.keyBytes));
    assert.equal(bytesToHex(ours.baseNonce), bytesToHex(theirs.nonceBase));
    const opener = await EhbpResponseOpener.create(secret, enc, nonce);
    for (let seq = 0; seq < 300; seq++) {
      const ct = await npmEhbp.encryptChunk(theirs, seq, encoder.encode(`frame ${seq}`));
      const prefix = new Uint8Array(4);
      new DataView(prefix.buffer).setUint32(0, ct.length);
      const [plain] = await opener.feed(Buffer.concat([prefix, ct]));
      assert.equal(new TextDecoder().decode(plain), `frame ${seq}`);
    }
  });

  test("openEhbpResponseStream: frames as they arrive, and a tampered frame errors the stream", async () => {
    const keyPair = await suite.GenerateKeyPair(true);
    const sealer = await EhbpRequestSealer.create(await suite.SerializePublicKey(keyPair.publicKey));
    const wire = await sealer.seal(encoder.encode("hello"));
    const parts = [encoder.encode("a".repeat(1000)), encoder.encode("b".repeat(2000))];
    const npm = await npmServer(keyPair, sealer, wire, parts);
    const streamOf = (chunks) =>
      new ReadableStream({
        start(controller) {
          for (const chunk of chunks) controller.enqueue(chunk);
          controller.close();
        },
      });
    let ended = "not yet";
    const plain = openEhbpResponseStream(streamOf(npm.frames), await sealer.responseOpener(npm.nonceHeader), {
      onEnd: (error) => (ended = error),
    });
    const got = [];
    for await (const chunk of plain) got.push(new TextDecoder().decode(chunk));
    assert.deepEqual(got, ["a".repeat(1000), "b".repeat(2000)]);
    assert.equal(ended, null);
    const tampered = npm.frames.map((part) => part.slice());
    tampered[3][5] ^= 1; // the second frame's ciphertext
    const broken = openEhbpResponseStream(streamOf(tampered), await sealer.responseOpener(npm.nonceHeader), {
      onEnd: (error) => (ended = error),
    });
    const reader = broken.getReader();
    assert.equal((await reader.read()).value.length, 1000); // the first frame opened
    await assert.rejects(reader.read(), isInvalidResponse);
    assert.ok(isInvalidResponse(ended));
  });
});
