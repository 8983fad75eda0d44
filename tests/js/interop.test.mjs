// Interoperability with independent implementations: npm `jose` for format J, npm `jsencrypt`
// and Node's own crypto for format E and the signatures.
//
//   node --test tests/js/interop.test.mjs

import { test, describe } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import * as jose from "jose";

import {
  HybridError,
  b64decode,
  b64encode,
  importCek,
  jwkThumbprint,
  openEnvelopeResponse,
  openJweResponse,
  sealEnvelopeRequest,
  sealJweRequest,
  sealSessionRequest,
  verifySignature,
  aesGcmSeal,
} from "../../flask_hybrid/static/hybrid.js";

const require = createRequire(import.meta.url);
const JSEncrypt = require("jsencrypt"); // its ESM entry does not load in Node; the CJS build does

const vectorsDir = process.env.FH_VECTORS_DIR
  ? pathToFileURL(process.env.FH_VECTORS_DIR.replace(/\/?$/, "/"))
  : new URL("../vectors/", import.meta.url);
const keys = JSON.parse(await readFile(new URL("keys.json", vectorsDir), "utf8"));
const id1 = keys.identity_1;

const utf8 = (text) => new TextEncoder().encode(text);
const text = (bytes) => new TextDecoder().decode(bytes);

describe("format J with npm jose", () => {
  test("jose compactDecrypt opens a request JWE our module builds", async () => {
    const payload = JSON.stringify({ order: { id: 7, note: "café ✓" } });
    const built = await sealJweRequest({
      publicKey: id1.public_pem,
      kid: id1.kid,
      method: "post",
      target: "/api/orders?x=1",
      payload,
      cty: "json",
    });
    const privateKey = await jose.importPKCS8(id1.private_pem, "RSA-OAEP-256");
    const { plaintext, protectedHeader } = await jose.compactDecrypt(built.jwe, privateKey, {
      keyManagementAlgorithms: ["RSA-OAEP-256"],
      contentEncryptionAlgorithms: ["A256GCM"],
    });
    assert.equal(text(plaintext), payload);
    assert.equal(protectedHeader.alg, "RSA-OAEP-256");
    assert.equal(protectedHeader.enc, "A256GCM");
    assert.equal(protectedHeader.kid, id1.kid);
    assert.equal(protectedHeader.htm, "POST");
    assert.equal(protectedHeader.htu, "/api/orders?x=1");
    assert.equal(protectedHeader.cty, "json");
    assert.equal(protectedHeader.jti, built.jti);
    assert.ok(jose.base64url.decode(protectedHeader.jti).length >= 16, "jti of 16+ random bytes");
    assert.ok(Math.abs(protectedHeader.iat - Date.now() / 1000) < 5, "iat is now, in seconds");
  });

  test("jose opens the empty-payload JWE of the X-Hybrid-JWE header form", async () => {
    const built = await sealJweRequest({ publicKey: id1.jwk, kid: id1.kid, method: "GET", target: "/api/items" });
    assert.equal(built.jwe.split(".")[3], "", "empty ciphertext segment");
    const privateKey = await jose.importPKCS8(id1.private_pem, "RSA-OAEP-256");
    const { plaintext, protectedHeader } = await jose.compactDecrypt(built.jwe, privateKey);
    assert.equal(plaintext.length, 0);
    assert.equal(protectedHeader.htm, "GET");
    assert.equal("cty" in protectedHeader, false);
  });

  test("a reused CEK gives the same encrypted key, fresh jti and IV, and jose opens both", async () => {
    const first = await sealJweRequest({ publicKey: id1.public_pem, kid: id1.kid, method: "POST", target: "/a", payload: "{}" });
    const second = await sealJweRequest({
      publicKey: id1.public_pem,
      kid: id1.kid,
      method: "POST",
      target: "/a",
      payload: "[]",
      cekKey: first.cekKey,
      encryptedKey: first.encryptedKey,
    });
    const [, ek1, iv1] = first.jwe.split(".");
    const [, ek2, iv2] = second.jwe.split(".");
    assert.equal(ek1, ek2);
    assert.notEqual(iv1, iv2);
    assert.notEqual(first.jti, second.jti);
    const privateKey = await jose.importPKCS8(id1.private_pem, "RSA-OAEP-256");
    assert.equal(text((await jose.compactDecrypt(second.jwe, privateKey)).plaintext), "[]");
  });

  test("our module opens a dir response JWE made by jose CompactEncrypt", async () => {
    const cek = crypto.getRandomValues(new Uint8Array(32));
    const body = JSON.stringify({ received: { ok: true, name: "Zoë" } });
    const jwe = await new jose.CompactEncrypt(utf8(body))
      .setProtectedHeader({ alg: "dir", enc: "A256GCM", req: "our-jti-123", status: 201, cty: "application/json" })
      .encrypt(cek);
    const opened = await openJweResponse(await importCek(cek), jwe, { req: "our-jti-123" });
    assert.equal(text(opened.plaintext), body);
    assert.equal(opened.status, 201);
    assert.equal(opened.contentType, "application/json");
    await assert.rejects(
      openJweResponse(await importCek(cek), jwe, { req: "other" }),
      (err) => err instanceof HybridError && err.code === "invalid_response",
    );
  });

  test("jose refuses a JWE whose protected header was altered (the header is the AAD)", async () => {
    const built = await sealJweRequest({ publicKey: id1.public_pem, kid: id1.kid, method: "POST", target: "/a", payload: "{}" });
    const parts = built.jwe.split(".");
    const header = JSON.parse(text(jose.base64url.decode(parts[0])));
    parts[0] = jose.base64url.encode(JSON.stringify({ ...header, htu: "/b" }));
    const privateKey = await jose.importPKCS8(id1.private_pem, "RSA-OAEP-256");
    await assert.rejects(jose.compactDecrypt(parts.join("."), privateKey));
  });

  test("our RFC 7638 thumbprint agrees with jose's calculateJwkThumbprint", async () => {
    for (const name of ["identity_1", "identity_2", "session"]) {
      assert.equal(await jwkThumbprint(keys[name].jwk), await jose.calculateJwkThumbprint(keys[name].jwk, "sha256"));
    }
  });
});

/** PKCS#1 v1.5 decryption: Node first; Node 20 refuses it (Marvin mitigation), then jsencrypt. */
function pkcs1Decrypt(privatePem, ekB64) {
  try {
    return crypto
      .privateDecrypt({ key: privatePem, padding: crypto.constants.RSA_PKCS1_PADDING }, b64decode(ekB64))
      .toString("latin1");
  } catch (err) {
    if (err.code !== "ERR_INVALID_ARG_VALUE") throw err;
    const decryptor = new JSEncrypt();
    decryptor.setPrivateKey(privatePem);
    return decryptor.decrypt(ekB64);
  }
}

describe("format E with npm jsencrypt", () => {
  test("an ek made through a real JSEncrypt instance decrypts to b64(CEK)", async () => {
    const jsencrypt = new JSEncrypt();
    jsencrypt.setPublicKey(id1.public_pem);
    const cek = crypto.getRandomValues(new Uint8Array(32));
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const plaintext = JSON.stringify({ message: "hello" });
    const { envelope, cekKey } = await sealEnvelopeRequest({ plaintext, jsencrypt, kid: id1.kid, cek, iv });
    assert.equal(envelope.alg, "RSA+AES-GCM");
    assert.equal(envelope.kid, id1.kid);
    assert.ok(b64decode(envelope.ek).length <= 256);
    assert.equal(pkcs1Decrypt(id1.private_pem, envelope.ek), b64encode(cek));
    // The content opens with Node's AES-GCM under the CEK.
    const ct = b64decode(envelope.ct);
    const decipher = crypto.createDecipheriv("aes-256-gcm", cek, b64decode(envelope.iv));
    decipher.setAuthTag(ct.subarray(ct.length - 16));
    const opened = Buffer.concat([decipher.update(ct.subarray(0, ct.length - 16)), decipher.final()]);
    assert.equal(opened.toString("utf8"), plaintext);
    // The returned key opens a sealed response made by Node.
    const respIv = crypto.getRandomValues(new Uint8Array(12));
    const cipher = crypto.createCipheriv("aes-256-gcm", cek, respIv);
    const sealed = Buffer.concat([cipher.update('{"received":{}}', "utf8"), cipher.final(), cipher.getAuthTag()]);
    const back = await openEnvelopeResponse(cekKey, { alg: "AES-GCM", iv: b64encode(respIv), ct: b64encode(sealed) });
    assert.equal(text(back), '{"received":{}}');
  });

  test("many jsencrypt eks: always strict base64 of at most the modulus size, and all decrypt", async () => {
    const jsencrypt = new JSEncrypt();
    jsencrypt.setPublicKey(id1.public_pem);
    for (let i = 0; i < 20; i++) {
      const cek = crypto.getRandomValues(new Uint8Array(32));
      const { envelope } = await sealEnvelopeRequest({ plaintext: "{}", jsencrypt, cek });
      assert.ok(b64decode(envelope.ek).length <= 256);
      assert.equal(pkcs1Decrypt(id1.private_pem, envelope.ek), b64encode(cek));
    }
  });

  test("without jsencrypt: RSA-OAEP-256 of the raw CEK, which Node's crypto decrypts", async () => {
    const cek = crypto.getRandomValues(new Uint8Array(32));
    const { envelope } = await sealEnvelopeRequest({ plaintext: "{}", publicKey: id1.public_pem, cek });
    assert.equal(envelope.alg, "RSA-OAEP-256+AES-GCM");
    const raw = crypto.privateDecrypt(
      { key: id1.private_pem, padding: crypto.constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" },
      b64decode(envelope.ek),
    );
    assert.deepEqual(new Uint8Array(raw), cek);
  });
});

describe("format S and signatures with Node's crypto", () => {
  test("an S encryptedAesKey is OAEP SHA-256 / MGF1-SHA-256 as Node's crypto decrypts it", async () => {
    const cek = crypto.getRandomValues(new Uint8Array(32));
    const { envelope } = await sealSessionRequest({ publicKey: keys.session.public_pem, plaintext: "{}", cek });
    const raw = crypto.privateDecrypt(
      { key: keys.session.private_pem, padding: crypto.constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" },
      b64decode(envelope.encryptedAesKey),
    );
    assert.deepEqual(new Uint8Array(raw), cek);
  });

  test("X-Response-Signature made by Node (RSASSA-PKCS1-v1_5 SHA-256) verifies; altered does not", async () => {
    for (const body of ["", '{"error":"invalid_payload","message":"x"}']) {
      const signature = crypto.sign("sha256", Buffer.from(body), id1.private_pem).toString("base64");
      assert.equal(await verifySignature(id1.jwk, signature, utf8(body)), true);
      assert.equal(await verifySignature(id1.public_pem, signature, utf8(body + " ")), false);
      assert.equal(await verifySignature(keys.identity_2.jwk, signature, utf8(body)), false);
      assert.equal(await verifySignature(id1.jwk, "not base64!", utf8(body)), false);
    }
  });

  test("AES-GCM of the module matches Node's", async () => {
    const key = crypto.getRandomValues(new Uint8Array(32));
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const sealed = await aesGcmSeal(key, utf8("payload"), { iv, aad: utf8("aad") });
    const cipher = crypto.createCipheriv("aes-256-gcm", key, iv);
    cipher.setAAD(Buffer.from("aad"));
    const ct = Buffer.concat([cipher.update("payload"), cipher.final()]);
    assert.deepEqual(Buffer.from(sealed.ciphertext), ct);
    assert.deepEqual(Buffer.from(sealed.tag), cipher.getAuthTag());
  });
});
