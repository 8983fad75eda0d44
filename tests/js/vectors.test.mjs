// Known-answer tests: the browser module against the shared vectors (PROTOCOL.md, vectors/).
//
// With the recorded CEK and IV, the module's request builders must reproduce every vector's
// deterministic bytes (ciphertext and tag, and for J the exact protected header text), and its
// openers must open every recorded sealed response to the recorded plaintext. RSA encryption is
// randomized, so wrapped keys are checked by unwrapping them with the private keys of keys.json.
//
//   node --test tests/js/vectors.test.mjs        (FH_VECTORS_DIR overrides the vectors folder)

import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

import {
  HybridError,
  b64decode,
  b64encode,
  b64urlDecode,
  b64urlEncode,
  jwkThumbprint,
  openEnvelopeResponse,
  openHandshakeResponse,
  openJweResponse,
  openSessionResponse,
  pemToJwk,
  importCek,
  sealEnvelopeRequest,
  sealJweRequest,
  sealSessionRequest,
} from "../../flask_hybrid/static/hybrid.js";

const require = createRequire(import.meta.url);
const JSEncrypt = require("jsencrypt"); // its ESM entry does not load in Node; the CJS build does

const vectorsDir = process.env.FH_VECTORS_DIR
  ? pathToFileURL(process.env.FH_VECTORS_DIR.replace(/\/?$/, "/"))
  : new URL("../vectors/", import.meta.url);
const load = async (name) => JSON.parse(await readFile(new URL(name, vectorsDir), "utf8"));

const keys = await load("keys.json");
const formatS = await load("format_s.json");
const formatE = await load("format_e.json");
const formatJ = await load("format_j.json");
const invalid = await load("invalid.json");

const hex = (text) => Uint8Array.from(Buffer.from(text, "hex"));
const utf8 = (text) => new TextEncoder().encode(text);
const bytesEqual = (actual, expected, message) =>
  assert.equal(Buffer.from(actual).toString("hex"), Buffer.from(expected).toString("hex"), message);

const subtle = globalThis.crypto.subtle;
const pkcs8 = (pem) => Buffer.from(pem.replace(/-----[^-]+-----|\s+/g, ""), "base64");
const oaepPrivate = {};
for (const name of ["identity_1", "identity_2", "session"]) {
  oaepPrivate[name] = await subtle.importKey(
    "pkcs8",
    pkcs8(keys[name].private_pem),
    { name: "RSA-OAEP", hash: "SHA-256" },
    false,
    ["decrypt"],
  );
}
const unwrapOaep = async (name, wrapped) => new Uint8Array(await subtle.decrypt({ name: "RSA-OAEP" }, oaepPrivate[name], wrapped));
const jsencryptDecrypt = (name, ek) => {
  const decryptor = new JSEncrypt();
  decryptor.setPrivateKey(keys[name].private_pem);
  return decryptor.decrypt(ek);
};
const rejectsWith = (promise, code) =>
  assert.rejects(promise, (err) => err instanceof HybridError && err.code === code);

describe("keys.json", () => {
  for (const name of ["identity_1", "identity_2", "session"]) {
    test(`${name}: kid is the RFC 7638 thumbprint, from the JWK and from the PEM`, async () => {
      assert.equal(await jwkThumbprint(keys[name].jwk), keys[name].kid);
      assert.equal(await jwkThumbprint(await pemToJwk(keys[name].public_pem)), keys[name].kid);
    });
  }
});

describe("format S vectors", () => {
  formatS.forEach((v, i) => {
    test(`S[${i}] ${v.description}`, async () => {
      const cek = hex(v.cek_hex);
      const sessionPublic = keys[v.session_key].public_pem;

      if (v.kind === "request") {
        const env = v.request.envelope;
        // The vector's own wrapped key holds the recorded CEK.
        bytesEqual(await unwrapOaep(v.session_key, b64decode(env.encryptedAesKey)), cek);
        // Fresh wrap: the deterministic parts are the vector's bytes, the wrap unwraps to the CEK.
        const sealed = await sealSessionRequest({
          publicKey: sessionPublic,
          plaintext: v.request.plaintext,
          cek,
          iv: hex(v.request.iv_hex),
        });
        assert.equal(sealed.envelope.encryptedData, env.encryptedData);
        assert.equal(sealed.envelope.iv, env.iv);
        assert.equal(sealed.envelope.authTag, env.authTag);
        bytesEqual(await unwrapOaep(v.session_key, b64decode(sealed.envelope.encryptedAesKey)), cek);
        // Reuse form (cekKey + encryptedAesKey): the whole envelope, byte for byte.
        const reused = await sealSessionRequest({
          plaintext: v.request.plaintext,
          cekKey: await importCek(cek),
          encryptedAesKey: env.encryptedAesKey,
          iv: hex(v.request.iv_hex),
        });
        assert.deepEqual(reused.envelope, env);
      } else if (v.kind === "header_key") {
        bytesEqual(await unwrapOaep(v.session_key, b64decode(v.request.headers["X-Encrypted-Aes-Key"])), cek);
      } else if (v.kind === "handshake") {
        assert.equal(v.request.body.aesKey, b64encode(cek));
        const info = await openHandshakeResponse(await importCek(cek), v.response.envelope);
        assert.deepEqual(info, JSON.parse(v.response.plaintext));
        assert.equal(info.publicKey, sessionPublic);
      }

      const opened = await openSessionResponse(await importCek(cek), v.response.envelope);
      bytesEqual(opened, utf8(v.response.plaintext), "response plaintext");
      // Raw CEK bytes are accepted too.
      bytesEqual(await openSessionResponse(cek, v.response.envelope), utf8(v.response.plaintext));
    });
  });

  test("the reuse vector really shares the first vector's CEK and encryptedAesKey", () => {
    assert.equal(formatS[4].cek_hex, formatS[0].cek_hex);
    assert.equal(formatS[4].request.envelope.encryptedAesKey, formatS[0].request.envelope.encryptedAesKey);
  });

  test("a flipped bit in a sealed S response is refused with invalid_response", async () => {
    const v = formatS[0];
    const tag = b64decode(v.response.envelope.authTag);
    tag[0] ^= 1;
    await rejectsWith(
      openSessionResponse(hex(v.cek_hex), { ...v.response.envelope, authTag: b64encode(tag) }),
      "invalid_response",
    );
    await rejectsWith(openSessionResponse(hex(formatS[1].cek_hex), v.response.envelope), "invalid_response");
  });
});

describe("format E vectors", () => {
  formatE.forEach((v, i) => {
    test(`E[${i}] ${v.description}`, async () => {
      const cek = hex(v.cek_hex);
      const pkcs1 = v.ek_padding === "RSAES-PKCS1-v1_5";
      let jsencrypt;
      if (pkcs1) {
        jsencrypt = new JSEncrypt();
        jsencrypt.setPublicKey(keys[v.key].public_pem);
      }
      const { envelope } = await sealEnvelopeRequest({
        plaintext: v.plaintext,
        publicKey: pkcs1 ? undefined : keys[v.key].public_pem,
        jsencrypt,
        kid: v.envelope.kid,
        cek,
        iv: hex(v.iv_hex),
      });
      assert.equal(envelope.alg, v.envelope.alg);
      assert.equal(envelope.iv, v.envelope.iv);
      assert.equal(envelope.ct, v.envelope.ct, "ciphertext || tag");
      assert.equal(envelope.kid, v.envelope.kid);
      // Our ek: PKCS#1 v1.5 of the b64(CEK) text (jsencrypt), or OAEP-256 of the raw CEK.
      if (pkcs1) {
        assert.equal(jsencryptDecrypt(v.key, envelope.ek), b64encode(cek));
      } else {
        bytesEqual(await unwrapOaep(v.key, b64decode(envelope.ek)), cek);
      }

      const sealed = v.sealed_response;
      bytesEqual(await openEnvelopeResponse(cek, sealed.envelope), utf8(sealed.plaintext));
    });
  });

  test("the vectors' own OAEP eks unwrap to what they say", async () => {
    for (const v of formatE.filter((x) => x.ek_padding.startsWith("RSAES-OAEP"))) {
      bytesEqual(await unwrapOaep(v.key, b64decode(v.envelope.ek)), hex(v.rsa_plaintext_hex));
    }
  });

  test("a sealed E response with a flipped bit, or the wrong alg, is refused", async () => {
    const v = formatE[0];
    const ct = b64decode(v.sealed_response.envelope.ct);
    ct[ct.length - 1] ^= 0x80;
    await rejectsWith(
      openEnvelopeResponse(hex(v.cek_hex), { ...v.sealed_response.envelope, ct: b64encode(ct) }),
      "invalid_response",
    );
    await rejectsWith(
      openEnvelopeResponse(hex(v.cek_hex), { ...v.sealed_response.envelope, alg: "AES-CBC" }),
      "invalid_response",
    );
  });
});

describe("format J vectors", () => {
  formatJ.forEach((v, i) => {
    test(`J[${i}] ${v.description}`, async () => {
      const cek = hex(v.cek_hex);
      const header = JSON.parse(v.protected_header);
      assert.equal(header.htm, v.request.method);
      assert.equal(header.htu, v.request.target);
      assert.equal(header.iat, v.request.now);

      const built = await sealJweRequest({
        publicKey: keys[v.key].public_pem,
        kid: header.kid,
        method: v.request.method,
        target: v.request.target,
        payload: v.plaintext,
        cty: header.cty,
        iat: header.iat,
        jti: header.jti,
        cek,
        iv: hex(v.iv_hex),
      });
      assert.equal(built.protectedHeader, v.protected_header, "same protected header text");
      assert.equal(built.jti, header.jti);
      const ours = built.jwe.split(".");
      const theirs = v.jwe.split(".");
      assert.equal(ours.length, 5);
      assert.equal(ours[0], theirs[0], "protected header segment");
      assert.equal(ours[2], theirs[2], "iv");
      assert.equal(ours[3], theirs[3], "ciphertext");
      assert.equal(ours[4], theirs[4], "tag");
      bytesEqual(await unwrapOaep(v.key, b64urlDecode(ours[1])), cek, "our encrypted key");
      bytesEqual(await unwrapOaep(v.key, b64urlDecode(theirs[1])), cek, "the vector's encrypted key");

      const opened = await openJweResponse(await importCek(cek), v.response.jwe, { req: header.jti });
      bytesEqual(opened.plaintext, utf8(v.response.plaintext), "response plaintext");
      assert.equal(opened.status, v.response.status);
      assert.equal(opened.contentType, "application/json");
      assert.deepEqual(opened.header, JSON.parse(v.response.protected_header));
    });
  });

  test("a J response for another request (req is not our jti) is refused", async () => {
    const v = formatJ[0];
    await rejectsWith(openJweResponse(hex(v.cek_hex), v.response.jwe, { req: "someone-else" }), "invalid_response");
  });

  test("a J response with a flipped tag bit, a changed header or another CEK is refused", async () => {
    const v = formatJ[0];
    const parts = v.response.jwe.split(".");
    const tag = b64urlDecode(parts[4]);
    tag[3] ^= 4;
    const flipped = [...parts.slice(0, 4), b64urlEncode(tag)].join(".");
    await rejectsWith(openJweResponse(hex(v.cek_hex), flipped), "invalid_response");

    const header = JSON.parse(v.response.protected_header);
    const forged = [b64urlEncode(utf8(JSON.stringify({ ...header, status: 201 }))), ...parts.slice(1)].join(".");
    await rejectsWith(openJweResponse(hex(v.cek_hex), forged), "invalid_response");

    await rejectsWith(openJweResponse(hex(formatJ[1].cek_hex), v.response.jwe), "invalid_response");
    await rejectsWith(openJweResponse(hex(v.cek_hex), parts.slice(0, 4).join(".")), "invalid_response");
  });
});

describe("strict base64 (PROTOCOL.md building blocks), on the invalid vectors' encodings", () => {
  const byId = Object.fromEntries(invalid.map((v) => [v.id, v]));

  test("URL-safe or unpadded base64 is not standard base64", () => {
    assert.throws(() => b64decode(byId["s-b64url"].envelope.encryptedAesKey), TypeError);
    assert.throws(() => b64decode(byId["e-b64url"].envelope.ct), TypeError);
  });

  test("base64 with line breaks is refused", () => {
    assert.throws(() => b64decode(byId["s-b64-whitespace"].envelope.encryptedAesKey), TypeError);
    assert.throws(() => b64decode(byId["e-b64-whitespace"].envelope.ek), TypeError);
  });

  test("round trips and strictness of the helpers", () => {
    for (let n = 0; n < 70; n++) {
      const bytes = Uint8Array.from({ length: n }, (_, i) => (i * 37 + n) & 0xff);
      bytesEqual(b64decode(b64encode(bytes)), bytes);
      bytesEqual(b64urlDecode(b64urlEncode(bytes)), bytes);
      assert.equal(b64encode(bytes), Buffer.from(bytes).toString("base64"));
      assert.equal(b64urlEncode(bytes), Buffer.from(bytes).toString("base64url"));
    }
    assert.throws(() => b64decode("AAA"), TypeError);
    assert.throws(() => b64decode("A==="), TypeError);
    assert.throws(() => b64decode("AA=A"), TypeError);
    assert.throws(() => b64urlDecode("AA=="), TypeError);
    assert.throws(() => b64urlDecode("A"), TypeError);
    assert.throws(() => b64urlDecode("a+b/"), TypeError);
  });
});
