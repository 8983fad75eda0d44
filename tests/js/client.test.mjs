// HybridClient end to end against an in-process mock of a flask-hybrid server (no Python needed).
//
// The mock is written from PROTOCOL.md with independent tools: npm `jose` opens and seals format
// J, npm `jsencrypt` unwraps PKCS#1 v1.5, Node's crypto does RSA-OAEP, AES-GCM and signatures.
// It is deliberately small: it exists to exercise the client's logic (retries, signatures,
// reuse, bodiless forms, close), not to be a server. live.test.mjs runs against the real one.
//
//   node --test tests/js/client.test.mjs

import { test, describe } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import * as jose from "jose";

import { HybridClient, HybridError, b64decode, b64encode } from "../../flask_hybrid/static/hybrid.js";

const require = createRequire(import.meta.url);
const JSEncrypt = require("jsencrypt");

const vectorsDir = process.env.FH_VECTORS_DIR
  ? pathToFileURL(process.env.FH_VECTORS_DIR.replace(/\/?$/, "/"))
  : new URL("../vectors/", import.meta.url);
const keys = JSON.parse(await readFile(new URL("keys.json", vectorsDir), "utf8"));

const BASE = "http://api.test";
const ERRORS = {
  invalid_payload: 400,
  invalid_session: 401,
  unknown_key: 401,
  replayed_request: 409,
  rate_limited: 429,
};

const aesSeal = (cek, plaintext) => {
  const iv = crypto.randomBytes(12);
  const cipher = crypto.createCipheriv("aes-256-gcm", cek, iv);
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return { iv, ct, tag: cipher.getAuthTag() };
};
const aesOpen = (cek, iv, ct, tag) => {
  if (cek.length !== 32 || iv.length !== 12 || tag.length !== 16) throw new Error("sizes");
  const decipher = crypto.createDecipheriv("aes-256-gcm", cek, iv);
  decipher.setAuthTag(tag);
  return Buffer.concat([decipher.update(ct), decipher.final()]);
};
const oaepDecrypt = (pem, data) =>
  crypto.privateDecrypt({ key: pem, padding: crypto.constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" }, data);

class Refusal extends Error {
  constructor(code, headers = {}) {
    super(code);
    this.code = code;
    this.headers = headers;
  }
}

/** A mock flask-hybrid server: `server.fetch` is the client's fetchImpl. */
function mockServer() {
  const state = {
    identities: ["identity_1", "identity_2"], // current first
    sessions: new Map(), // token -> {sessionId, deviceId}
    seenJti: new Set(),
    log: [], // {method, url, headers, body}
    policy: "unsealed", // or "all" / "none"
    badSignature: false,
    failNext: null, // a refusal code for the next encrypted request
    replayLastJweResponse: false,
    lastJweResponse: null,
    wrongJweStatus: false,
    unsealedSessionAnswer: false,
  };

  const sign = (bytes) => {
    const sig = crypto.sign("sha256", Buffer.from(bytes), keys[state.identities[0]].private_pem);
    if (state.badSignature) sig[10] ^= 1;
    return sig.toString("base64");
  };

  const reply = (status, body, headers = {}, { signed = false } = {}) => {
    const bytes = Buffer.from(body ?? "");
    const h = new Headers(headers);
    if ((signed && state.policy !== "none") || state.policy === "all") {
      h.set("X-Response-Signature", sign(bytes));
      h.set("X-Response-Signature-Kid", keys[state.identities[0]].kid);
    }
    return new Response([204, 304].includes(status) ? null : bytes, { status, headers: h });
  };
  const refusal = (code, headers = {}) =>
    reply(
      ERRORS[code],
      JSON.stringify({ error: code, message: `generic ${code}` }),
      { "Content-Type": "application/json", ...headers },
      { signed: true },
    );

  /** The demo app: POST /api/echo answers {"received": body}; anything else 404/405. */
  function app(method, path, contentType, body) {
    if (path === "/api/echo") {
      if (method !== "POST") return { status: 405, type: "text/html; charset=utf-8", body: "<h1>Method Not Allowed</h1>" };
      const received = contentType.startsWith("application/json") ? JSON.parse(body.toString("utf8")) : body.toString("utf8");
      return { status: 200, type: "application/json", body: JSON.stringify({ received, contentType }) };
    }
    return { status: 404, type: "application/json", body: '{"error":"not found"}' };
  }

  const findIdentity = (kid) => state.identities.find((name) => keys[name].kid === kid);

  async function handle(url, method, headers, body) {
    const path = url.pathname;
    if (path === "/hybrid/jwks.json") {
      const list = state.identities.map((n) => ({ kty: "RSA", kid: keys[n].kid, n: keys[n].jwk.n, e: keys[n].jwk.e }));
      return reply(200, JSON.stringify({ keys: list }), { "Content-Type": "application/json" });
    }
    if (path === "/hybrid/public-key") {
      const current = keys[state.identities[0]];
      return reply(200, JSON.stringify({ kid: current.kid, publicKey: current.public_pem }), { "Content-Type": "application/json" });
    }
    if (path === "/hybrid/session" && method === "POST") {
      const { aesKey, deviceId } = JSON.parse(body.toString("utf8"));
      const token = crypto.randomBytes(16).toString("hex");
      const sessionId = crypto.randomUUID();
      state.sessions.set(token, { sessionId, deviceId });
      const inner = JSON.stringify({ token, publicKey: keys.session.public_pem, sessionId, expiresIn: 3600 });
      const s = aesSeal(b64decode(aesKey), inner);
      const env = { encryptedData: b64encode(s.ct), iv: b64encode(s.iv), authTag: b64encode(s.tag) };
      return reply(201, JSON.stringify(env), { "Content-Type": "application/json" }, { signed: true });
    }
    if (path === "/hybrid/session" && method === "DELETE") {
      const token = (headers.get("authorization") ?? "").replace(/^Bearer /, "");
      if (!state.sessions.delete(token)) return refusal("invalid_session");
      return reply(204, null);
    }

    const isJose = (headers.get("content-type") ?? "").startsWith("application/jose") || headers.has("x-hybrid-jwe");
    const isEncrypted = isJose || /^true$/i.test(headers.get("x-encryption-enabled") ?? "");
    if (!isEncrypted) {
      const out = app(method, path, headers.get("content-type") ?? "", body);
      return reply(out.status, out.body, { "Content-Type": out.type });
    }
    if (state.failNext) {
      const [code, extra] = state.failNext;
      state.failNext = null;
      return refusal(code, extra);
    }
    try {
      if (isJose) return await handleJ(url, method, headers, body);
      if (headers.has("x-encrypted-aes-key") || (body.length && "encryptedAesKey" in JSON.parse(body))) {
        return handleS(url, method, headers, body);
      }
      return handleE(url, method, headers, body);
    } catch (err) {
      if (err instanceof Refusal) return refusal(err.code, err.headers);
      return refusal("invalid_payload");
    }
  }

  function handleS(url, method, headers, body) {
    const token = (headers.get("authorization") ?? "").replace(/^Bearer /, "");
    const session = state.sessions.get(token);
    if (!session || session.deviceId !== headers.get("x-device-id")) throw new Refusal("invalid_session");
    let cek;
    let plaintext = Buffer.alloc(0);
    if (body.length) {
      const env = JSON.parse(body.toString("utf8"));
      cek = oaepDecrypt(keys.session.private_pem, b64decode(env.encryptedAesKey));
      plaintext = aesOpen(cek, b64decode(env.iv), b64decode(env.encryptedData), b64decode(env.authTag));
    } else {
      cek = oaepDecrypt(keys.session.private_pem, b64decode(headers.get("x-encrypted-aes-key")));
    }
    const out = app(method, url.pathname, "application/json; charset=utf-8", plaintext);
    if (state.unsealedSessionAnswer) return reply(out.status, out.body, { "Content-Type": out.type });
    const s = aesSeal(cek, out.body);
    const env = { encryptedData: b64encode(s.ct), iv: b64encode(s.iv), authTag: b64encode(s.tag) };
    return reply(out.status, JSON.stringify(env), {
      "Content-Type": "application/json",
      "X-Encryption-Enabled": "true",
      "X-Plaintext-Content-Type": out.type,
    });
  }

  function handleE(url, method, headers, body) {
    const env = JSON.parse(body.toString("utf8"));
    let names = state.identities;
    if (env.kid !== undefined) {
      const name = findIdentity(env.kid);
      if (!name) throw new Refusal("unknown_key");
      names = [name];
    }
    let cek = null;
    for (const name of names) {
      if (env.alg === "RSA+AES-GCM") {
        const decryptor = new JSEncrypt();
        decryptor.setPrivateKey(keys[name].private_pem);
        const text = decryptor.decrypt(env.ek);
        if (typeof text === "string" && text.length === 44) cek = b64decode(text);
      } else if (env.alg === "RSA-OAEP-256+AES-GCM") {
        try {
          cek = oaepDecrypt(keys[name].private_pem, b64decode(env.ek));
        } catch {
          cek = null;
        }
      } else {
        throw new Refusal("invalid_payload");
      }
      if (cek) break;
    }
    const ct = b64decode(env.ct);
    const plaintext = aesOpen(cek, b64decode(env.iv), ct.subarray(0, ct.length - 16), ct.subarray(ct.length - 16));
    const out = app(method, url.pathname, "application/json; charset=utf-8", plaintext);
    if (!/^true$/i.test(headers.get("x-encrypt-response") ?? "")) {
      return reply(out.status, out.body, { "Content-Type": out.type }, { signed: true });
    }
    const s = aesSeal(cek, out.body);
    const sealed = { alg: "AES-GCM", iv: b64encode(s.iv), ct: b64encode(Buffer.concat([s.ct, s.tag])) };
    return reply(out.status, JSON.stringify(sealed), {
      "Content-Type": "application/json",
      "X-Plaintext-Content-Type": out.type,
    });
  }

  async function handleJ(url, method, headers, body) {
    const jwe = headers.get("x-hybrid-jwe") ?? body.toString("utf8");
    const header = jose.decodeProtectedHeader(jwe);
    const name = findIdentity(header.kid);
    if (!name) throw new Refusal("unknown_key");
    const privateKey = await jose.importPKCS8(keys[name].private_pem, "RSA-OAEP-256");
    const { plaintext, protectedHeader: h } = await jose.compactDecrypt(jwe, privateKey, {
      keyManagementAlgorithms: ["RSA-OAEP-256"],
      contentEncryptionAlgorithms: ["A256GCM"],
    });
    const target = url.pathname + url.search;
    if (h.htm !== method || h.htu !== target || Math.abs(h.iat - Date.now() / 1000) > 300) {
      throw new Refusal("replayed_request");
    }
    if (state.seenJti.has(h.jti)) throw new Refusal("replayed_request");
    state.seenJti.add(h.jti);
    const cek = oaepDecrypt(keys[name].private_pem, Buffer.from(jose.base64url.decode(jwe.split(".")[1])));
    const contentType = h.cty === undefined || h.cty === "json" ? "application/json; charset=utf-8" : h.cty;
    const out = app(method, url.pathname, contentType, Buffer.from(plaintext));
    if (state.replayLastJweResponse && state.lastJweResponse) return state.lastJweResponse.clone();
    const status = state.wrongJweStatus ? 200 : out.status;
    const response = await new jose.CompactEncrypt(new TextEncoder().encode(out.body))
      .setProtectedHeader({ alg: "dir", enc: "A256GCM", req: h.jti, status, cty: out.type })
      .encrypt(cek);
    const res = reply(out.status, response, { "Content-Type": "application/jose" });
    state.lastJweResponse = res.clone();
    return res;
  }

  async function fetchImpl(input, init = {}) {
    const url = new URL(input);
    const headers = new Headers(init.headers);
    const method = init.method ?? "GET";
    const body = Buffer.from(init.body ?? "");
    state.log.push({ method, url: url.href, headers, body: body.toString("utf8") });
    return handle(url, method, headers, body);
  }

  return { fetch: fetchImpl, state };
}

const connect = (server, options) => HybridClient.connect({ baseUrl: BASE, fetchImpl: server.fetch, ...options });
const isHybridError = (code) => (err) => err instanceof HybridError && err.code === code;
const echo = (client, payload, init = {}) =>
  client.fetch("/api/echo", { method: "POST", body: JSON.stringify(payload), ...init });
const flipByteOfBody = (wire) => {
  // Flip a byte deep inside the ciphertext: for J the 4th segment, for S/E the JSON ciphertext.
  if (wire.body.includes("\"")) {
    const env = JSON.parse(wire.body);
    const field = "encryptedData" in env ? "encryptedData" : "ct";
    const bytes = b64decode(env[field]);
    bytes[0] ^= 1;
    env[field] = b64encode(bytes);
    wire.body = JSON.stringify(env);
  } else {
    const parts = wire.body.split(".");
    parts[3] = (parts[3][0] === "A" ? "B" : "A") + parts[3].slice(1);
    wire.body = parts.join(".");
  }
};

describe("format J (jwe)", () => {
  test("round trip: POST, sealed request and response, Response with the app's status and type", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "jwe" });
    const res = await echo(client, { hello: "wörld" });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "application/json");
    assert.deepEqual(await res.json(), { received: { hello: "wörld" }, contentType: "application/json; charset=utf-8" });
    const ex = client.lastExchange;
    assert.equal(ex.kind, "request");
    assert.equal(ex.format, "jwe");
    assert.equal(ex.sealed, true);
    assert.equal(ex.signature, "not-needed");
    assert.equal(ex.requestHeaders["content-type"], "application/jose");
    assert.equal(ex.requestBody.split(".").length, 5);
    assert.equal(ex.responseBody.split(".").length, 5);
    assert.equal(ex.requestPlaintext, '{"hello":"wörld"}');
    assert.match(ex.plaintext, /wörld/);
    assert.equal(client.kid, keys.identity_1.kid);
    await client.close(); // no session: a no-op, and the client stays usable
    assert.equal((await echo(client, {})).status, 200);
  });

  test("htu is the path and query exactly as sent; a non-JSON body travels with its real cty", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "jwe" });
    const res = await client.fetch("/api/echo?x=1&y=%C3%A9", {
      method: "post",
      body: "plain text",
      headers: { "Content-Type": "text/plain; charset=utf-8" },
    });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { received: "plain text", contentType: "text/plain; charset=utf-8" });
    const header = jose.decodeProtectedHeader(server.state.log.at(-1).body);
    assert.equal(header.htu, "/api/echo?x=1&y=%C3%A9");
    assert.equal(header.htm, "POST");
    assert.equal(header.cty, "text/plain; charset=utf-8");
  });

  test("bodiless GET: X-Hybrid-JWE header with an empty payload, the 405 comes back sealed", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "jwe" });
    const res = await client.fetch("/api/echo");
    assert.equal(res.status, 405);
    assert.equal(res.headers.get("content-type"), "text/html; charset=utf-8");
    assert.match(await res.text(), /Method Not Allowed/);
    const sent = server.state.log.at(-1);
    assert.equal(sent.body, "");
    const header = jose.decodeProtectedHeader(sent.headers.get("x-hybrid-jwe"));
    assert.equal(header.htm, "GET");
    assert.equal("cty" in header, false);
    assert.equal(client.lastExchange.sealed, true);
  });

  test("fresh CEK per request by default; reuseKey keeps one wrapped key with fresh jti and IV", async () => {
    const server = mockServer();
    const fresh = await connect(server, { format: "jwe" });
    await echo(fresh, { n: 1 });
    await echo(fresh, { n: 2 });
    const [a, b] = server.state.log.slice(-2).map((e) => e.body.split("."));
    assert.notEqual(a[1], b[1]);

    const reusing = await connect(server, { format: "jwe", reuseKey: true });
    await echo(reusing, { n: 1 });
    const r = await echo(reusing, { n: 2 });
    assert.deepEqual(await r.json(), { received: { n: 2 }, contentType: "application/json; charset=utf-8" });
    const [c, d] = server.state.log.slice(-2).map((e) => e.body.split("."));
    assert.equal(c[1], d[1], "same encrypted key");
    assert.notEqual(c[2], d[2], "fresh IV");
    assert.notEqual(jose.decodeProtectedHeader(c.join(".")).jti, jose.decodeProtectedHeader(d.join(".")).jti);
  });

  test("unknown_key: the keys are refetched and the request retried once", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "jwe" });
    server.state.identities = ["identity_2"]; // the server rotated: identity_1 is gone
    const res = await echo(client, { after: "rotation" });
    assert.equal(res.status, 200);
    assert.equal(client.kid, keys.identity_2.kid);
    const paths = server.state.log.slice(-3).map((e) => new URL(e.url).pathname);
    assert.deepEqual(paths, ["/api/echo", "/hybrid/jwks.json", "/api/echo"]);

    server.state.failNext = ["unknown_key"];
    const again = await echo(client, {});
    assert.equal(again.status, 200, "one more unknown_key is retried too");
  });

  test("pinnedKid: the pinned identity key is used, an absent one is unknown_key", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "jwe", pinnedKid: keys.identity_2.kid });
    await echo(client, {});
    assert.equal(jose.decodeProtectedHeader(server.state.log.at(-1).body).kid, keys.identity_2.kid);
    await assert.rejects(connect(server, { format: "jwe", pinnedKid: keys.session.kid }), isHybridError("unknown_key"));
  });

  test("a response to another request (replayed), or whose status disagrees, is invalid_response", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "jwe", reuseKey: true });
    await echo(client, { first: true });
    server.state.replayLastJweResponse = true;
    await assert.rejects(echo(client, { second: true }), isHybridError("invalid_response"));
    server.state.replayLastJweResponse = false;

    server.state.wrongJweStatus = true;
    await assert.rejects(client.fetch("/api/echo"), isHybridError("invalid_response"));
  });

  test("a tampered request is refused: invalid_payload, with the status and the signature checked", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "jwe", beforeSend: flipByteOfBody });
    await assert.rejects(echo(client, { x: 1 }), (err) => isHybridError("invalid_payload")(err) && err.status === 400);
    assert.equal(client.lastExchange.signature, "valid");
    assert.equal(client.lastExchange.error.code, "invalid_payload");
  });

  test("a refusal with a bad signature is invalid_signature", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "jwe" });
    server.state.badSignature = true;
    server.state.failNext = ["replayed_request"];
    await assert.rejects(echo(client, {}), isHybridError("invalid_signature"));
  });

  test("rate_limited carries Retry-After as retryAfter; replayed_request is not retried", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "jwe" });
    server.state.failNext = ["rate_limited", { "Retry-After": "7" }];
    await assert.rejects(echo(client, {}), (err) => isHybridError("rate_limited")(err) && err.retryAfter === 7 && err.status === 429);
    server.state.failNext = ["replayed_request"];
    const before = server.state.log.length;
    await assert.rejects(echo(client, {}), isHybridError("replayed_request"));
    assert.equal(server.state.log.length, before + 1);
  });
});

describe("format S (session)", () => {
  test("handshake, round trip, bodiless GET with X-Encrypted-Aes-Key, close", async () => {
    const server = mockServer();
    const exchanges = [];
    const client = await connect(server, { format: "session", deviceId: "device-1", onExchange: (e) => exchanges.push(e) });
    assert.equal(exchanges[0].kind, "handshake");
    assert.equal(exchanges[0].signature, "valid");
    assert.equal(exchanges[0].sealed, true);
    assert.ok(client.sessionId);

    const res = await echo(client, { a: [1, 2] });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "application/json");
    assert.deepEqual((await res.json()).received, { a: [1, 2] });
    const sent = server.state.log.at(-1);
    assert.equal(sent.headers.get("x-device-id"), "device-1");
    assert.equal(sent.headers.get("x-encryption-enabled"), "true");
    assert.match(sent.headers.get("authorization"), /^Bearer /);
    assert.deepEqual(Object.keys(JSON.parse(sent.body)).sort(), ["authTag", "encryptedAesKey", "encryptedData", "iv"]);
    assert.equal(client.lastExchange.sealed, true);
    assert.equal(client.lastExchange.signature, "not-needed");

    const get = await client.fetch("/api/echo");
    assert.equal(get.status, 405);
    assert.ok(server.state.log.at(-1).headers.get("x-encrypted-aes-key"));
    assert.equal(client.lastExchange.sealed, true);

    await client.close();
    assert.equal(server.state.log.at(-1).method, "DELETE");
    assert.equal(server.state.sessions.size, 0);
    assert.equal(exchanges.at(-1).kind, "close");
    await assert.rejects(echo(client, {}), isHybridError("invalid_session"));
  });

  test("reuseKey: one encryptedAesKey for the session, fresh IVs", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "session", reuseKey: true });
    await echo(client, { n: 1 });
    await echo(client, { n: 2 });
    const [a, b] = server.state.log.slice(-2).map((e) => JSON.parse(e.body));
    assert.equal(a.encryptedAesKey, b.encryptedAesKey);
    assert.notEqual(a.iv, b.iv);
  });

  test("invalid_session (session gone): a new handshake, then the request retried transparently", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "session" });
    const first = client.sessionId;
    server.state.sessions.clear();
    const res = await echo(client, { ok: 1 });
    assert.equal(res.status, 200);
    assert.notEqual(client.sessionId, first);
  });

  test("parallel requests that all find the session gone share one new handshake", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "session" });
    server.state.sessions.clear();
    const results = await Promise.all([1, 2, 3].map((i) => echo(client, { i })));
    for (const [k, res] of results.entries()) assert.deepEqual((await res.json()).received, { i: k + 1 });
    const handshakes = server.state.log.filter((e) => e.method === "POST" && new URL(e.url).pathname === "/hybrid/session");
    assert.equal(handshakes.length, 2, "the first one and a single renewal");
  });

  test("a handshake whose signature is bad or missing is refused", async () => {
    const server = mockServer();
    server.state.badSignature = true;
    await assert.rejects(connect(server, { format: "session" }), isHybridError("invalid_signature"));
    server.state.badSignature = false;
    server.state.policy = "none";
    await assert.rejects(connect(server, { format: "session" }), isHybridError("invalid_signature"));
  });

  test("an unsealed answer to an encrypted request is invalid_response", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "session" });
    server.state.unsealedSessionAnswer = true;
    await assert.rejects(echo(client, {}), isHybridError("invalid_response"));
  });

  test("a tampered request is invalid_payload", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "session", beforeSend: flipByteOfBody });
    await assert.rejects(echo(client, { x: 1 }), isHybridError("invalid_payload"));
  });

  test("S and E carry JSON only", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "session" });
    await assert.rejects(client.fetch("/api/echo", { method: "POST", body: "x", headers: { "Content-Type": "text/plain" } }), TypeError);
  });
});

describe("format E (envelope)", () => {
  test("with a real JSEncrypt: RSA+AES-GCM, a b64-text CEK, the sealed answer opened", async () => {
    const server = mockServer();
    const jsencrypt = new JSEncrypt();
    const client = await connect(server, { format: "envelope", jsencrypt });
    const res = await echo(client, { via: "jsencrypt" });
    assert.equal(res.status, 200);
    assert.deepEqual((await res.json()).received, { via: "jsencrypt" });
    const env = JSON.parse(server.state.log.at(-1).body);
    assert.equal(env.alg, "RSA+AES-GCM");
    assert.equal(env.kid, keys.identity_1.kid);
    assert.equal(server.state.log.at(-1).headers.get("x-encrypt-response"), "true");
    assert.equal(client.lastExchange.sealed, true);
    assert.equal(client.lastExchange.signature, "not-needed");
  });

  test("without JSEncrypt: RSA-OAEP-256+AES-GCM; an object body is sent as JSON", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "envelope" });
    const res = await client.fetch("/api/echo", { method: "POST", body: { plain: "object" } });
    assert.deepEqual((await res.json()).received, { plain: "object" });
    assert.equal(JSON.parse(server.state.log.at(-1).body).alg, "RSA-OAEP-256+AES-GCM");
  });

  test("encryptResponse false: the plain answer must be signed; missing or bad is invalid_signature", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "envelope", encryptResponse: false });
    const res = await echo(client, { signed: true });
    assert.deepEqual((await res.json()).received, { signed: true });
    assert.equal(client.lastExchange.sealed, false);
    assert.equal(client.lastExchange.signature, "valid");

    server.state.badSignature = true;
    await assert.rejects(echo(client, {}), isHybridError("invalid_signature"));
    server.state.badSignature = false;
    server.state.policy = "none";
    await assert.rejects(echo(client, {}), isHybridError("invalid_signature"));
  });

  test("policy all: a sealed answer's signature is checked too", async () => {
    const server = mockServer();
    server.state.policy = "all";
    const client = await connect(server, { format: "envelope" });
    await echo(client, {});
    assert.equal(client.lastExchange.signature, "valid");
    server.state.badSignature = true;
    await assert.rejects(echo(client, {}), isHybridError("invalid_signature"));
  });

  test("unknown_key: the public key is refetched (jsencrypt given the new one) and retried", async () => {
    const server = mockServer();
    const jsencrypt = new JSEncrypt();
    const client = await connect(server, { format: "envelope", jsencrypt });
    server.state.identities = ["identity_2"];
    const res = await echo(client, { rotated: true });
    assert.equal(res.status, 200);
    assert.equal(client.kid, keys.identity_2.kid);
  });

  test("pinnedKid selects a loaded non-current key for E too (PEM derived from jwks.json)", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "envelope", jsencrypt: new JSEncrypt(), pinnedKid: keys.identity_2.kid });
    await echo(client, {});
    assert.equal(JSON.parse(server.state.log.at(-1).body).kid, keys.identity_2.kid);
  });

  test("a bodiless E request goes in the clear (no header form in E); a tampered body is invalid_payload", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "envelope", jsencrypt: new JSEncrypt() });
    const res = await client.fetch("/hybrid/public-key");
    assert.equal(res.status, 200);
    assert.equal(client.lastExchange.sealed, false);
    assert.equal(client.lastExchange.signature, "absent");

    const tampering = await connect(server, { format: "envelope", beforeSend: flipByteOfBody });
    await assert.rejects(echo(tampering, {}), isHybridError("invalid_payload"));
  });
});

describe("options", () => {
  test("bad options are TypeErrors", () => {
    assert.throws(() => new HybridClient({ format: "xml" }), TypeError);
    assert.throws(() => new HybridClient({ format: "session", deviceId: "has space" }), TypeError);
  });
});
