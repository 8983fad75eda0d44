// Live tests: the browser module against a running flask-hybrid demo server (app.py).
//
//   make run &                                   # or: PORT=5000 python app.py
//   FH_BASE_URL=http://127.0.0.1:5000 node --test tests/js/live.test.mjs
//
// The server must expose the blueprint at /hybrid and `POST /api/echo` answering
// {"received": <json body>}. Without FH_BASE_URL this file FAILS (it never skips silently).

import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

import {
  HybridClient,
  HybridError,
  b64decode,
  b64encode,
  contentDigest,
  jwkThumbprint,
} from "../../flask_hybrid/static/hybrid.js";

const require = createRequire(import.meta.url);
const JSEncrypt = require("jsencrypt"); // its ESM entry does not load in Node; the CJS build does

const BASE = process.env.FH_BASE_URL;

if (!BASE) {
  test("live tests need a running server", () => {
    assert.fail(
      "FH_BASE_URL is not set: start the demo server (make run) and run " +
        "FH_BASE_URL=http://127.0.0.1:5000 node --test tests/js/live.test.mjs",
    );
  });
} else {
  defineLiveTests(BASE.replace(/\/+$/, ""));
}

function defineLiveTests(baseUrl) {
  const connect = (options) => HybridClient.connect({ baseUrl, ...options });
  const isHybridError = (code) => (err) => err instanceof HybridError && err.code === code;
  const payload = { message: "hello, flask-hybrid", count: 3, name: "Zoë Ångström", emoji: "🔐✅", nested: { a: [1, 2.5, null, true] } };
  const echo = (client, body = payload, path = "/api/echo") =>
    client.fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const assertEcho = async (res, body = payload) => {
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
    assert.deepEqual(await res.json(), { received: body });
  };

  /** beforeSend hook: flip one bit of the ciphertext that goes on the wire. */
  const flipCiphertextBit = (wire) => {
    if (!wire.body) return;
    if (wire.body.startsWith("{")) {
      const env = JSON.parse(wire.body);
      const field = "encryptedData" in env ? "encryptedData" : "ct";
      const bytes = b64decode(env[field]);
      bytes[0] ^= 1;
      env[field] = b64encode(bytes);
      wire.body = JSON.stringify(env);
    } else {
      const parts = wire.body.split(".");
      const c = parts[3][0];
      parts[3] = (c === "A" ? "B" : "A") + parts[3].slice(1); // first 6 bits of the ciphertext
      wire.body = parts.join(".");
    }
  };

  test("the server is reachable and publishes its keys", async () => {
    const res = await fetch(`${baseUrl}/hybrid/jwks.json`).catch((err) => {
      throw new Error(`cannot reach ${baseUrl} (FH_BASE_URL): ${err.message}`);
    });
    assert.equal(res.status, 200);
    const { keys } = await res.json();
    assert.ok(Array.isArray(keys) && keys.length >= 1);
  });

  describe("format J (jwe)", () => {
    test("round trip POST /api/echo, sealed both ways", async () => {
      const client = await connect({ format: "jwe" });
      await assertEcho(await echo(client));
      const ex = client.lastExchange;
      assert.equal(ex.sealed, true);
      assert.equal(ex.requestHeaders["content-type"], "application/jose");
      assert.match(ex.responseHeaders["content-type"], /^application\/jose/);
      assert.equal(ex.responseBody.split(".").length, 5);
      await client.close();
    });

    test("a query string travels in htu exactly as sent", async () => {
      const client = await connect({ format: "jwe" });
      await assertEcho(await echo(client, payload, "/api/echo?x=1&y=%C3%A9"));
    });

    test("reuseKey: several requests under one CEK", async () => {
      const client = await connect({ format: "jwe", reuseKey: true });
      const sent = [];
      client.onExchange = (ex) => sent.push(ex.requestBody);
      for (let i = 0; i < 3; i++) await assertEcho(await echo(client, { i }), { i });
      const eks = sent.map((jwe) => jwe.split(".")[1]);
      assert.equal(new Set(eks).size, 1);
    });

    test("bodiless GET (X-Hybrid-JWE): the 405 of GET /api/echo comes back sealed", async () => {
      const client = await connect({ format: "jwe" });
      const res = await client.fetch("/api/echo");
      assert.equal(res.status, 405);
      assert.equal(client.lastExchange.sealed, true);
      assert.ok(client.lastExchange.requestHeaders["x-hybrid-jwe"]);
      await res.arrayBuffer();
    });

    test("pinnedKid: the current kid works, an unknown one is unknown_key", async () => {
      const { keys } = await (await fetch(`${baseUrl}/hybrid/jwks.json`)).json();
      const client = await connect({ format: "jwe", pinnedKid: keys[0].kid });
      await assertEcho(await echo(client));
      await assert.rejects(connect({ format: "jwe", pinnedKid: "A".repeat(43) }), isHybridError("unknown_key"));
    });

    test("a tampered request is invalid_payload (a refusal signed for this request)", async () => {
      const client = await connect({ format: "jwe", beforeSend: flipCiphertextBit });
      await assert.rejects(echo(client), (err) => isHybridError("invalid_payload")(err) && err.status === 400);
      assert.equal(client.lastExchange.signature, "valid", "refusals are signed for their request by default");
      const sent = client.lastExchange;
      assert.equal(sent.requestHeaders["content-digest"], await contentDigest(sent.requestBody));
      assert.match(sent.responseHeaders["signature-input"], /^hybrid=\(.*"content-digest";req.*tag="flask-hybrid"/);
    });

    test("unknown_key, signed for this request: the keys are refetched and the request retried", async () => {
      const client = await connect({ format: "jwe" });
      // Make the client encrypt to a key the server does not have (as after a rotation).
      const pair = await crypto.subtle.generateKey(
        { name: "RSA-OAEP", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" },
        true,
        ["encrypt", "decrypt"],
      );
      const { n, e } = await crypto.subtle.exportKey("jwk", pair.publicKey);
      const kid = await jwkThumbprint({ n, e });
      client._keys.set(kid, { kid, jwk: { kty: "RSA", n, e }, enc: true, sig: false }); // internal
      client._currentKid = kid;
      const exchanges = [];
      client.onExchange = (ex) => exchanges.push([ex.status, ex.signature, ex.error && ex.error.code]);
      await assertEcho(await echo(client));
      assert.deepEqual(exchanges, [[401, "valid", "unknown_key"], [200, "not-needed", null]]);
      assert.notEqual(client.kid, kid);
    });
  });

  describe("format S (session)", () => {
    test("handshake (signed, sealed) and round trip", async () => {
      const exchanges = [];
      const client = await connect({ format: "session", deviceId: "live-test-device", onExchange: (e) => exchanges.push(e) });
      assert.equal(exchanges[0].kind, "handshake");
      assert.equal(exchanges[0].signature, "valid");
      assert.ok(client.sessionId);
      await assertEcho(await echo(client));
      assert.equal(client.lastExchange.sealed, true);
      await client.close();
    });

    test("reuseKey: one encryptedAesKey for the session", async () => {
      const client = await connect({ format: "session", reuseKey: true });
      const sent = [];
      client.onExchange = (ex) => sent.push(JSON.parse(ex.requestBody).encryptedAesKey);
      for (let i = 0; i < 3; i++) await assertEcho(await echo(client, { i }), { i });
      assert.equal(new Set(sent).size, 1);
      await client.close();
    });

    test("bodiless GET (X-Encrypted-Aes-Key, a fresh one each time even with reuseKey): the 405 comes back sealed", async () => {
      const client = await connect({ format: "session", reuseKey: true });
      const wrapped = [];
      for (let i = 0; i < 2; i++) {
        const res = await client.fetch("/api/echo");
        assert.equal(res.status, 405);
        assert.equal(client.lastExchange.sealed, true);
        assert.equal(client.lastExchange.requestHeaders["content-digest"], await contentDigest(""));
        wrapped.push(client.lastExchange.requestHeaders["x-encrypted-aes-key"]);
      }
      assert.ok(wrapped[0] && wrapped[1] && wrapped[0] !== wrapped[1]);
      await client.close();
      assert.equal(client.lastExchange.signature, "valid", "the DELETE's answer is signed for it");
    });

    test("close(): the client refuses further requests, and the server refuses the old token", async () => {
      const client = await connect({ format: "session" });
      await assertEcho(await echo(client));
      const oldSession = client._session; // internal: to replay the closed session's token
      await client.close();
      assert.equal(client.lastExchange.kind, "close");
      assert.ok([200, 204].includes(client.lastExchange.status), `DELETE answered ${client.lastExchange.status}`);
      await assert.rejects(echo(client), isHybridError("invalid_session"));

      // Reopen with the deleted session: the server says invalid_session, the client re-handshakes.
      const exchanges = [];
      client._closed = false;
      client._session = oldSession;
      client.onExchange = (e) => exchanges.push(e);
      await assertEcho(await echo(client));
      assert.deepEqual(
        exchanges.map((e) => [e.kind, e.status, e.error && e.error.code]),
        [["request", 401, "invalid_session"], ["handshake", 201, null], ["request", 200, null]],
      );
      assert.notEqual(client.sessionId, oldSession.sessionId);
      await client.close();
    });

    test("a tampered request is invalid_payload", async () => {
      const client = await connect({ format: "session", beforeSend: flipCiphertextBit });
      await assert.rejects(echo(client), isHybridError("invalid_payload"));
      await client.close();
    });
  });

  describe("format E (envelope)", () => {
    test("with the real jsencrypt (PKCS#1 v1.5 over b64(CEK)): round trip, sealed answer", async () => {
      const client = await connect({ format: "envelope", jsencrypt: new JSEncrypt() });
      await assertEcho(await echo(client));
      assert.equal(JSON.parse(client.lastExchange.requestBody).alg, "RSA+AES-GCM");
      assert.equal(client.lastExchange.sealed, true);
    });

    test("with Web Crypto RSA-OAEP-256: round trip, sealed answer", async () => {
      const client = await connect({ format: "envelope" });
      await assertEcho(await echo(client));
      assert.equal(JSON.parse(client.lastExchange.requestBody).alg, "RSA-OAEP-256+AES-GCM");
      assert.equal(client.lastExchange.sealed, true);
    });

    test("encryptResponse false: the plain answer is signed and verified", async () => {
      const client = await connect({ format: "envelope", jsencrypt: new JSEncrypt(), encryptResponse: false });
      await assertEcho(await echo(client));
      assert.equal(client.lastExchange.sealed, false);
      assert.equal(client.lastExchange.signature, "valid");
    });

    test("bodiless GET: E has no header form, so it goes in the clear (405 not sealed)", async () => {
      const client = await connect({ format: "envelope" });
      const res = await client.fetch("/api/echo");
      assert.equal(res.status, 405);
      assert.equal(client.lastExchange.sealed, false);
      await res.arrayBuffer();
    });

    test("a tampered request is invalid_payload (a signed refusal)", async () => {
      const client = await connect({ format: "envelope", jsencrypt: new JSEncrypt(), beforeSend: flipCiphertextBit });
      await assert.rejects(echo(client), isHybridError("invalid_payload"));
      assert.equal(client.lastExchange.signature, "valid");
    });
  });
}
