// HybridClient end to end against an in-process mock of a flask-hybrid server (no Python needed).
//
// The mock is written from PROTOCOL.md with independent tools: npm `jose` opens and seals format
// J, npm `jsencrypt` unwraps PKCS#1 v1.5, Node's crypto does RSA-OAEP, AES-GCM and the RFC 9421
// response signatures (signer.mjs). It is deliberately small: it exists to exercise the client's
// logic (retries, request-bound signatures, reuse, bodiless forms, close), not to be a server.
// `state.proxy` puts an attacker after TLS between the two. live.test.mjs runs against the real
// server, tests/test_attack_browser.py against the real server behind a real attacking proxy.
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
import { digestOf, signResponse } from "./signer.mjs";

const require = createRequire(import.meta.url);
const JSEncrypt = require("jsencrypt");

const vectorsDir = process.env.FH_VECTORS_DIR
  ? pathToFileURL(process.env.FH_VECTORS_DIR.replace(/\/?$/, "/"))
  : new URL("../vectors/", import.meta.url);
const keys = JSON.parse(await readFile(new URL("keys.json", vectorsDir), "utf8"));

// A signing key that is no identity key, for servers that keep the two apart.
const signingPair = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
const signingJwk = signingPair.publicKey.export({ format: "jwk" });
keys.signing = {
  private_pem: signingPair.privateKey.export({ type: "pkcs8", format: "pem" }),
  jwk: signingJwk,
  kid: crypto.createHash("sha256").update(`{"e":"${signingJwk.e}","kty":"RSA","n":"${signingJwk.n}"}`).digest("base64url"),
};

const BASE = "http://api.test";
const ERRORS = {
  invalid_payload: 400,
  invalid_session: 401,
  unknown_key: 401,
  replayed_request: 409,
  rate_limited: 429,
};
const NULL_BODY_STATUSES = [204, 205, 304];

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
  constructor(code, headers = {}, status = ERRORS[code]) {
    super(code);
    this.code = code;
    this.headers = headers;
    this.status = status;
  }
}

/**
 * A mock flask-hybrid server: `server.fetch` is the client's fetchImpl.
 *
 * Responses are signed as PROTOCOL.md has it (policy "unsealed": refusals, handshake and session
 * answers, bodiless answers to sealed requests, format E plain answers), by `state.signer`, with
 * `state.signWith` overrides to forge defects. `state.proxy(request, response)` may replace any
 * response after the server made it (the app has run): the attacker after TLS.
 */
function mockServer() {
  const state = {
    identities: ["identity_1", "identity_2"], // current first
    signer: "identity_1", // the key that signs responses
    jwks: "both", // "both": enc and sig entries (a key that does both listed twice); "plain": no use
    sessions: new Map(), // token -> {sessionId, deviceId}
    seenJti: new Set(),
    log: [], // {method, url, headers, body}
    policy: "unsealed", // or "all" / "none"
    signWith: {}, // signResponse overrides (defects)
    badSignature: false,
    failNext: null, // [code, extra headers, status] of a refusal of the next encrypted request
    proxy: null,
    orders: 0, // how many times POST /api/order ran
    replayLastJweResponse: false,
    replayLastSessionAnswer: false, // answer with the previous sealed S answer (same reused CEK)
    lastSessionAnswer: null,
    unsignedSessionSeal: false,
    rsaSessionSeal: false, // sign S's sealed answers with the signing key instead of the CEK HMAC
    lastJweResponse: null,
    wrongJweStatus: false,
    unsealedSessionAnswer: false,
  };

  const signHeaders = (req, status, bytes, refusal = null, cek = null) => {
    const signer = keys[state.signer];
    const { headers } = signResponse({
      privatePem: signer.private_pem,
      kid: signer.kid,
      status,
      body: bytes,
      request: req,
      refusal,
      cek,
      corrupt: state.badSignature,
      ...state.signWith,
    });
    // The body-only signature JSEncrypt-era clients verify; flask-hybrid's clients ignore it.
    headers["X-Response-Signature"] = crypto.sign("sha256", bytes, keys.identity_1.private_pem).toString("base64");
    headers["X-Response-Signature-Kid"] = keys.identity_1.kid;
    return headers;
  };

  const reply = (req, status, body, headers = {}, { signed = false, refusal = null, cek = null } = {}) => {
    const bytes = NULL_BODY_STATUSES.includes(status) ? Buffer.alloc(0) : Buffer.from(body ?? "");
    const h = new Headers(headers);
    if ((signed && state.policy !== "none") || state.policy === "all") {
      const answerCek = state.policy === "all" ? null : cek;
      for (const [name, value] of Object.entries(signHeaders(req, status, bytes, refusal, answerCek))) h.set(name, value);
    }
    return new Response(NULL_BODY_STATUSES.includes(status) ? null : bytes, { status, headers: h });
  };
  const refusal = (req, code, headers = {}, status = ERRORS[code]) =>
    reply(
      req,
      status,
      JSON.stringify({ error: code, message: `generic ${code}` }),
      { "Content-Type": "application/json", ...headers },
      { signed: true, refusal: code },
    );

  /** The app: echo, an order counter, a 204, an answer that looks like a refusal; else 404/405. */
  function app(method, path, contentType, body) {
    if (path === "/api/echo") {
      if (method !== "POST") return { status: 405, type: "text/html; charset=utf-8", body: "<h1>Method Not Allowed</h1>" };
      const received = contentType.startsWith("application/json") ? JSON.parse(body.toString("utf8")) : body.toString("utf8");
      return { status: 200, type: "application/json", body: JSON.stringify({ received, contentType }) };
    }
    if (path === "/api/order" && method === "POST") {
      state.orders += 1;
      return { status: 200, type: "application/json", body: JSON.stringify({ order: state.orders }) };
    }
    if (path === "/api/nothing") return { status: 204, type: "text/plain", body: "" };
    if (path === "/api/fake-refusal") {
      return { status: 200, type: "application/json", body: '{"error":"unknown_key","message":"the app says so"}' };
    }
    if (path === "/api/lookalike-refusal") {
      // The app's own answer, with a refusal's status and body: not the server's refusal.
      return { status: 401, type: "application/json", body: '{"error":"unknown_key","message":"the app says so"}' };
    }
    return { status: 404, type: "application/json", body: '{"error":"not found"}' };
  }

  const findIdentity = (kid) => state.identities.find((name) => keys[name].kid === kid);

  function jwks() {
    const entry = (name, extra) => ({ kty: "RSA", kid: keys[name].kid, n: keys[name].jwk.n, e: keys[name].jwk.e, ...extra });
    if (state.jwks === "plain") return state.identities.map((name) => entry(name, {}));
    return [
      ...state.identities.map((name) => entry(name, { use: "enc", alg: "RSA-OAEP-256" })),
      entry(state.signer, { use: "sig", alg: "RS256" }),
    ];
  }

  async function serve(req) {
    const { url, method, headers, body } = req;
    const path = url.pathname;
    if (path === "/hybrid/jwks.json") {
      return reply(req, 200, JSON.stringify({ keys: jwks() }), { "Content-Type": "application/json" });
    }
    if (path === "/hybrid/public-key") {
      const current = keys[state.identities[0]];
      return reply(req, 200, JSON.stringify({ kid: current.kid, publicKey: current.public_pem }), { "Content-Type": "application/json" });
    }
    const digest = headers.get("content-digest");
    if (digest !== null && digest !== digestOf(body)) return refusal(req, "invalid_payload");
    if (path === "/hybrid/session" && method === "POST") {
      if (state.failNext) {
        const [code, extra, status] = state.failNext;
        state.failNext = null;
        return refusal(req, code, extra, status);
      }
      const { aesKey, deviceId } = JSON.parse(body.toString("utf8"));
      const token = crypto.randomBytes(16).toString("hex");
      const sessionId = crypto.randomUUID();
      state.sessions.set(token, { sessionId, deviceId });
      const inner = JSON.stringify({ token, publicKey: keys.session.public_pem, sessionId, expiresIn: 3600 });
      const s = aesSeal(b64decode(aesKey), inner);
      const env = { encryptedData: b64encode(s.ct), iv: b64encode(s.iv), authTag: b64encode(s.tag) };
      return reply(req, 201, JSON.stringify(env), { "Content-Type": "application/json" }, { signed: true });
    }
    if (path === "/hybrid/session" && method === "DELETE") {
      const token = (headers.get("authorization") ?? "").replace(/^Bearer /, "");
      if (!state.sessions.delete(token)) return refusal(req, "invalid_session");
      return reply(req, 204, null, {}, { signed: true });
    }

    const isJose = (headers.get("content-type") ?? "").startsWith("application/jose") || headers.has("x-hybrid-jwe");
    const isEncrypted = isJose || /^true$/i.test(headers.get("x-encryption-enabled") ?? "");
    if (!isEncrypted) {
      const out = app(method, path, headers.get("content-type") ?? "", body);
      return reply(req, out.status, out.body, { "Content-Type": out.type });
    }
    if (state.failNext) {
      const [code, extra, status] = state.failNext;
      state.failNext = null;
      return refusal(req, code, extra, status);
    }
    try {
      if (isJose) return await handleJ(req);
      if (headers.has("x-encrypted-aes-key") || (body.length && "encryptedAesKey" in JSON.parse(body))) {
        return handleS(req);
      }
      return handleE(req);
    } catch (err) {
      if (err instanceof Refusal) return refusal(req, err.code, err.headers, err.status);
      return refusal(req, "invalid_payload");
    }
  }

  /** The app's answer to a sealed request: sealed by `seal`, or bodiless and signed. */
  function sealedAnswer(req, out, seal, headers, { signed = false, cek = null } = {}) {
    if (NULL_BODY_STATUSES.includes(out.status)) return reply(req, out.status, null, {}, { signed: true });
    return reply(req, out.status, seal(out.body), headers, { signed, cek });
  }

  function handleS(req) {
    const { url, method, headers, body } = req;
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
    if (state.unsealedSessionAnswer) return reply(req, out.status, out.body, { "Content-Type": out.type });
    const seal = (text) => {
      const s = aesSeal(cek, text);
      return JSON.stringify({ encryptedData: b64encode(s.ct), iv: b64encode(s.iv), authTag: b64encode(s.tag) });
    };
    // S's seal names no request, so the server signs S's sealed answers (PROTOCOL.md).
    if (state.replayLastSessionAnswer && state.lastSessionAnswer) return state.lastSessionAnswer.clone();
    const answer = sealedAnswer(
      req,
      out,
      seal,
      { "Content-Type": "application/json", "X-Encryption-Enabled": "true", "X-Plaintext-Content-Type": out.type },
      { signed: !state.unsignedSessionSeal, cek: state.rsaSessionSeal ? null : cek },
    );
    state.lastSessionAnswer = answer.clone();
    return answer;
  }

  function handleE(req) {
    const { url, method, headers, body } = req;
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
      return reply(req, out.status, out.body, { "Content-Type": out.type }, { signed: true });
    }
    const seal = (text) => {
      const s = aesSeal(cek, text);
      return JSON.stringify({ alg: "AES-GCM", iv: b64encode(s.iv), ct: b64encode(Buffer.concat([s.ct, s.tag])) });
    };
    return sealedAnswer(req, out, seal, { "Content-Type": "application/json", "X-Plaintext-Content-Type": out.type });
  }

  async function handleJ(req) {
    const { url, method, headers, body } = req;
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
    if (NULL_BODY_STATUSES.includes(out.status)) return sealedAnswer(req, out);
    const status = state.wrongJweStatus ? 200 : out.status;
    const response = await new jose.CompactEncrypt(new TextEncoder().encode(out.body))
      .setProtectedHeader({ alg: "dir", enc: "A256GCM", req: h.jti, status, cty: out.type })
      .encrypt(cek);
    const res = reply(req, out.status, response, { "Content-Type": "application/jose" });
    state.lastJweResponse = res.clone();
    return res;
  }

  async function fetchImpl(input, init = {}) {
    const url = new URL(input);
    const headers = new Headers(init.headers);
    const method = init.method ?? "GET";
    const body = Buffer.from(init.body ?? "");
    const req = { url, method, headers, body };
    state.log.push({ method, url: url.href, headers, body: body.toString("utf8") });
    const res = await serve(req);
    return state.proxy ? state.proxy(req, res) : res;
  }

  return { fetch: fetchImpl, state };
}

const connect = (server, options) => HybridClient.connect({ baseUrl: BASE, fetchImpl: server.fetch, ...options });
const isHybridError = (code) => (err) => err instanceof HybridError && err.code === code;
const echo = (client, payload, init = {}) =>
  client.fetch("/api/echo", { method: "POST", body: JSON.stringify(payload), ...init });
const order = (client) => client.fetch("/api/order", { method: "POST", body: { item: "pump", quantity: 1 } });
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
const FORMATS = [
  ["jwe", () => ({})],
  ["session", () => ({})],
  ["envelope", () => ({ jsencrypt: new JSEncrypt() })],
];
const isOrder = (req) => req.url.pathname === "/api/order";
const logOf = (server, path) => server.state.log.filter((e) => new URL(e.url).pathname === path);

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
    assert.equal(ex.requestHeaders["content-digest"], digestOf(ex.requestBody));
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
    assert.equal(sent.headers.get("content-digest"), digestOf(""));
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

  test("unknown_key, signed for this request: the keys are refetched and the request retried once", async () => {
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
    server.state.signer = "identity_2"; // pinnedKid pins the signing key too, by default
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
    // The hook changed the body: the client sent the digest of the body that went on the wire.
    assert.equal(server.state.log.at(-1).headers.get("content-digest"), digestOf(server.state.log.at(-1).body));
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

  test("a bodiless answer (204) to a sealed request counts when signed for it", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "jwe" });
    const res = await client.fetch("/api/nothing", { method: "DELETE" });
    assert.equal(res.status, 204);
    assert.equal(client.lastExchange.signature, "valid");
    assert.equal(client.lastExchange.sealed, false);
  });
});

describe("format S (session)", () => {
  test("reuseKey: an earlier sealed answer replayed for a later request is refused (S's seal names no request)", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "session", reuseKey: true });
    await echo(client, { first: true });
    assert.equal(client.lastExchange.signature, "valid", "the server binds S's sealed answers");
    assert.match(client.lastExchange.responseHeaders["signature-input"], /keyid="cek";alg="hmac-sha256"/);
    server.state.rsaSessionSeal = true; // the signing key's signature counts as well
    await echo(client, { again: true });
    assert.match(client.lastExchange.responseHeaders["signature-input"], /alg="rsa-v1_5-sha256"/);
    server.state.rsaSessionSeal = false;
    server.state.replayLastSessionAnswer = true;
    await assert.rejects(echo(client, { second: true }), isHybridError("invalid_signature"));
    server.state.replayLastSessionAnswer = false;
    server.state.unsignedSessionSeal = true;
    await assert.rejects(echo(client, { third: true }), isHybridError("invalid_signature"));
    const fresh = await connect(server, { format: "session" });
    await echo(fresh, { fresh: true }); // a fresh CEK per request: the seal itself binds the answer
  });

  test("handshake, round trip, bodiless GET with X-Encrypted-Aes-Key, close", async () => {
    const server = mockServer();
    const exchanges = [];
    const client = await connect(server, { format: "session", deviceId: "device-1", onExchange: (e) => exchanges.push(e) });
    assert.equal(exchanges[0].kind, "handshake");
    assert.equal(exchanges[0].signature, "valid");
    assert.equal(exchanges[0].sealed, true);
    assert.equal(exchanges[0].requestHeaders["content-digest"], digestOf(exchanges[0].requestBody));
    assert.ok(client.sessionId);

    const res = await echo(client, { a: [1, 2] });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "application/json");
    assert.deepEqual((await res.json()).received, { a: [1, 2] });
    const sent = server.state.log.at(-1);
    assert.equal(sent.headers.get("x-device-id"), "device-1");
    assert.equal(sent.headers.get("x-encryption-enabled"), "true");
    assert.equal(sent.headers.get("content-digest"), digestOf(sent.body));
    assert.match(sent.headers.get("authorization"), /^Bearer /);
    assert.deepEqual(Object.keys(JSON.parse(sent.body)).sort(), ["authTag", "encryptedAesKey", "encryptedData", "iv"]);
    assert.equal(client.lastExchange.sealed, true);
    assert.equal(client.lastExchange.signature, "valid"); // the server signs S's sealed answers

    const get = await client.fetch("/api/echo");
    assert.equal(get.status, 405);
    assert.ok(server.state.log.at(-1).headers.get("x-encrypted-aes-key"));
    assert.equal(server.state.log.at(-1).headers.get("content-digest"), digestOf(""));
    assert.equal(client.lastExchange.sealed, true);

    await client.close();
    const deleted = server.state.log.at(-1);
    assert.equal(deleted.method, "DELETE");
    assert.equal(deleted.headers.get("content-digest"), digestOf(""));
    assert.equal(server.state.sessions.size, 0);
    assert.equal(exchanges.at(-1).kind, "close");
    assert.equal(exchanges.at(-1).signature, "valid");
    await assert.rejects(echo(client, {}), isHybridError("invalid_session"));
  });

  test("close(): an answer not signed for the DELETE is invalid_signature (the session is forgotten anyway)", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "session" });
    server.state.proxy = async (req, res) => (req.method === "DELETE" ? new Response(null, { status: 204 }) : res);
    await assert.rejects(client.close(), isHybridError("invalid_signature"));
    assert.equal(client.sessionId, null);
  });

  test("reuseKey: one encryptedAesKey for bodies; every bodiless request wraps a fresh CEK", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "session", reuseKey: true });
    await echo(client, { n: 1 });
    await echo(client, { n: 2 });
    const [a, b] = server.state.log.slice(-2).map((e) => JSON.parse(e.body));
    assert.equal(a.encryptedAesKey, b.encryptedAesKey);
    assert.notEqual(a.iv, b.iv);

    assert.equal((await client.fetch("/api/echo")).status, 405);
    assert.equal((await client.fetch("/api/echo")).status, 405);
    const headers = server.state.log.slice(-2).map((e) => e.headers.get("x-encrypted-aes-key"));
    assert.ok(headers[0] && headers[1]);
    assert.notEqual(headers[0], headers[1]);
    assert.notEqual(headers[0], a.encryptedAesKey);
    await echo(client, { n: 3 });
    assert.equal(JSON.parse(server.state.log.at(-1).body).encryptedAesKey, a.encryptedAesKey, "the reused CEK stays");
  });

  test("invalid_session (session gone), signed for this request: a new handshake, then the request retried", async () => {
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

  test("a handshake whose signature is bad, missing or bound to another handshake is refused", async () => {
    const server = mockServer();
    server.state.badSignature = true;
    await assert.rejects(connect(server, { format: "session" }), isHybridError("invalid_signature"));
    server.state.badSignature = false;
    server.state.policy = "none";
    await assert.rejects(connect(server, { format: "session" }), isHybridError("invalid_signature"));
    server.state.policy = "unsealed";

    let captured = null;
    server.state.proxy = async (req, res) => {
      if (req.method !== "POST" || req.url.pathname !== "/hybrid/session") return res;
      if (!captured) captured = res.clone();
      return captured.clone();
    };
    await connect(server, { format: "session" });
    await assert.rejects(connect(server, { format: "session" }), isHybridError("invalid_signature"));
  });

  test("a handshake refusal counts only signed: rate_limited signed, else invalid_signature", async () => {
    const server = mockServer();
    server.state.failNext = ["rate_limited", { "Retry-After": "3" }];
    await assert.rejects(connect(server, { format: "session" }), (err) => isHybridError("rate_limited")(err) && err.retryAfter === 3);
    server.state.proxy = async (req, res) =>
      req.url.pathname === "/hybrid/session"
        ? new Response('{"error":"rate_limited","message":"m"}', { status: 429, headers: { "Content-Type": "application/json" } })
        : res;
    await assert.rejects(connect(server, { format: "session" }), isHybridError("invalid_signature"));
  });

  test("an unsealed answer to an encrypted request: invalid_signature unsigned, invalid_response signed", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "session" });
    server.state.unsealedSessionAnswer = true;
    await assert.rejects(echo(client, {}), isHybridError("invalid_signature"));
    server.state.policy = "all";
    await assert.rejects(echo(client, {}), isHybridError("invalid_response"));
  });

  test("a tampered request is invalid_payload", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "session", beforeSend: flipByteOfBody });
    await assert.rejects(echo(client, { x: 1 }), isHybridError("invalid_payload"));
  });

  test("a request whose Content-Digest the hook broke is refused invalid_payload", async () => {
    const server = mockServer();
    const breakDigest = (wire) => wire.headers.set("Content-Digest", digestOf("something else"));
    const client = await connect(server, { format: "session", beforeSend: breakDigest });
    await assert.rejects(echo(client, { x: 1 }), isHybridError("invalid_payload"));
    assert.equal(client.lastExchange.signature, "valid", "bound to the digest the client sent");
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
    const sent = server.state.log.at(-1);
    const env = JSON.parse(sent.body);
    assert.equal(env.alg, "RSA+AES-GCM");
    assert.equal(env.kid, keys.identity_1.kid);
    assert.equal(sent.headers.get("x-encrypt-response"), "true");
    assert.equal(sent.headers.get("content-digest"), digestOf(sent.body));
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

  test("encryptResponse false: the plain answer must be signed for it; missing, bad or X-Response-Signature only is invalid_signature", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "envelope", encryptResponse: false });
    const res = await echo(client, { signed: true });
    assert.deepEqual((await res.json()).received, { signed: true });
    assert.equal(client.lastExchange.sealed, false);
    assert.equal(client.lastExchange.signature, "valid");

    server.state.badSignature = true;
    await assert.rejects(echo(client, {}), isHybridError("invalid_signature"));
    server.state.badSignature = false;
    server.state.proxy = async (req, res) => {
      for (const name of ["signature-input", "signature"]) res.headers.delete(name); // X-Response-Signature stays valid
      return res;
    };
    await assert.rejects(echo(client, {}), isHybridError("invalid_signature"));
    server.state.proxy = null;
    server.state.policy = "none";
    await assert.rejects(echo(client, {}), isHybridError("invalid_signature"));
  });

  test("an app answer that reads like a refusal but has another status is an answer (parseRefusal checks the status)", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "envelope", encryptResponse: false });
    const res = await client.fetch("/api/fake-refusal", { method: "POST", body: {} });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { error: "unknown_key", message: "the app says so" });
    assert.equal(logOf(server, "/api/fake-refusal").length, 1, "not retried");
  });

  test("an app answer with a refusal's status and body, signed but not marked X-Hybrid-Refusal, is the app's answer", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "envelope", encryptResponse: false });
    const res = await client.fetch("/api/lookalike-refusal", { method: "POST", body: {} });
    assert.equal(res.status, 401);
    assert.deepEqual(await res.json(), { error: "unknown_key", message: "the app says so" });
    assert.equal(client.lastExchange.signature, "valid");
    assert.equal(logOf(server, "/api/lookalike-refusal").length, 1, "never retried: the app ran once");
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
    server.state.signer = "identity_2";
    const res = await echo(client, { rotated: true });
    assert.equal(res.status, 200);
    assert.equal(client.kid, keys.identity_2.kid);
  });

  test("pinnedKid selects a loaded non-current key for E too (PEM derived from jwks.json)", async () => {
    const server = mockServer();
    const client = await connect(server, {
      format: "envelope",
      jsencrypt: new JSEncrypt(),
      pinnedKid: keys.identity_2.kid,
      pinnedSigningKid: null,
    });
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
    assert.equal(server.state.log.at(-1).headers.has("content-digest"), false, "a plain request stays plain");

    const tampering = await connect(server, { format: "envelope", beforeSend: flipByteOfBody });
    await assert.rejects(echo(tampering, {}), isHybridError("invalid_payload"));
  });
});

describe("signing keys (jwks.json use, pins)", () => {
  test("a separate signing key (use sig) verifies; an identity key (use enc) does not sign", async () => {
    const server = mockServer();
    server.state.signer = "signing";
    const client = await connect(server, { format: "jwe" });
    assert.equal(client.kid, keys.identity_1.kid, "the sig entry is never an encryption key");
    server.state.failNext = ["replayed_request"];
    await assert.rejects(echo(client, {}), isHybridError("replayed_request"));
    assert.equal(client.lastExchange.signature, "valid");

    server.state.signWith = { privatePem: keys.identity_1.private_pem, keyid: keys.identity_1.kid };
    server.state.failNext = ["replayed_request"];
    await assert.rejects(echo(client, {}), isHybridError("invalid_signature"));
  });

  test("a jwks.json without use: every key may sign (servers whose identity keys sign)", async () => {
    const server = mockServer();
    server.state.jwks = "plain";
    server.state.signer = "identity_2";
    const client = await connect(server, { format: "session" });
    assert.equal(client.lastExchange.signature, "valid");
  });

  test("pinnedSigningKid: only that key's signatures count; it defaults to pinnedKid", async () => {
    const server = mockServer();
    server.state.signer = "signing";
    await connect(server, { format: "session", pinnedSigningKid: keys.signing.kid });
    await assert.rejects(connect(server, { format: "session", pinnedSigningKid: keys.identity_1.kid }), isHybridError("invalid_signature"));
    await assert.rejects(connect(server, { format: "session", pinnedKid: keys.identity_1.kid }), isHybridError("invalid_signature"));
    await connect(server, { format: "session", pinnedKid: keys.identity_1.kid, pinnedSigningKid: keys.signing.kid });
  });

  test("a signing key the client has not seen yet: jwks.json is fetched again once", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "jwe" });
    server.state.signer = "signing"; // added after the client loaded jwks.json
    server.state.failNext = ["replayed_request"];
    await assert.rejects(echo(client, {}), isHybridError("replayed_request"));
    assert.equal(logOf(server, "/hybrid/jwks.json").length, 2);
  });

  const defects = [
    ["another label", { label: "sig1" }],
    ["another tag", { tag: "other-app" }],
    ["another alg", { alg: "rsa-pss-sha512" }],
    ["no created", { created: null }],
    ["a keyid that is no key", { keyid: "A".repeat(43) }],
    ["no request digest covered", { components: ['"@status"', '"content-digest"', '"@method";req'] }],
    ["no method covered", { components: ['"@status"', '"content-digest"', '"content-digest";req'] }],
    ["no status covered", { components: ['"content-digest"', '"@method";req', '"content-digest";req'] }],
    ["a component this client does not rebuild", { components: ['"@status"', '"content-digest"', '"@method";req', '"content-digest";req', '"@path";req'] }],
    ["another status signed", { signedStatus: 200 }],
    ["a digest that is not the body's", { digest: digestOf("another body") }],
    ["a corrupted signature", { corrupt: true }],
  ];
  for (const [name, signWith] of defects) {
    test(`a refusal signed with ${name} is invalid_signature, never retried`, async () => {
      const server = mockServer();
      const client = await connect(server, { format: "jwe" });
      server.state.signWith = signWith;
      server.state.failNext = ["unknown_key"];
      await assert.rejects(echo(client, {}), isHybridError("invalid_signature"));
      assert.equal(logOf(server, "/api/echo").length, 1);
    });
  }

  test("a bodiless request's answer must cover its key header", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "session" });
    server.state.signWith = { components: ['"@status"', '"content-digest"', '"@method";req', '"content-digest";req'] };
    await assert.rejects(client.fetch("/api/nothing", { method: "DELETE" }), isHybridError("invalid_signature"));
    server.state.signWith = {};
    assert.equal((await client.fetch("/api/nothing", { method: "DELETE" })).status, 204);
  });

  test("a refusal signed for this request but with another code's status is no refusal: not retried", async () => {
    const server = mockServer();
    const client = await connect(server, { format: "jwe" });
    server.state.failNext = ["unknown_key", {}, 400];
    await assert.rejects(echo(client, {}), isHybridError("invalid_response"));
    assert.equal(logOf(server, "/api/echo").length, 1);
  });
});

describe("a proxy after TLS (issue 7): the app runs once, the client rejects", () => {
  for (const [format, extra] of FORMATS) {
    describe(`format ${format}`, () => {
      for (const code of ["unknown_key", "invalid_session"]) {
        test(`an unsigned ${code} in place of the 200 (with a valid X-Response-Signature)`, async () => {
          const server = mockServer();
          const client = await connect(server, { format, ...extra() });
          // A genuine refusal of this code, stripped of its request-bound signature: its
          // body-only X-Response-Signature still verifies, as it would for any request.
          server.state.failNext = [code];
          const genuine = await server.fetch(`${BASE}/api/echo`, { method: "POST", headers: { "X-Encryption-Enabled": "true" } });
          const forged = new Response(await genuine.arrayBuffer(), { status: genuine.status, headers: genuine.headers });
          for (const name of ["signature-input", "signature", "content-digest"]) forged.headers.delete(name);
          assert.ok(forged.headers.get("x-response-signature"));
          server.state.proxy = async (req, res) => (isOrder(req) ? forged.clone() : res);
          await assert.rejects(order(client), (err) => isHybridError("invalid_signature")(err) && err.status === ERRORS[code]);
          assert.equal(server.state.orders, 1, "the app ran the order once");
          assert.equal(logOf(server, "/api/order").length, 1, "and the client never sent it again");
        });
      }

      test("a genuine signed refusal, replayed from another request", async () => {
        const server = mockServer();
        const client = await connect(server, { format, ...extra() });
        let captured = null;
        server.state.proxy = async (req, res) => {
          if (!isOrder(req)) return res;
          if (res.status === 401 && !captured) captured = res.clone();
          return captured && res.status === 200 && server.state.orders === 2 ? captured.clone() : res;
        };
        server.state.failNext = ["unknown_key"];
        assert.equal((await order(client)).status, 200, "the genuine refusal is verified and retried");
        assert.equal(server.state.orders, 1);
        assert.ok(captured);
        await assert.rejects(order(client), isHybridError("invalid_signature"));
        assert.equal(server.state.orders, 2, "each order ran once");
        assert.equal(logOf(server, "/api/order").length, 3);
      });

      test("200 → 204, unsigned, or with the signature of another request's 204", async () => {
        const server = mockServer();
        const client = await connect(server, { format, ...extra() });
        server.state.proxy = async (req, res) => (isOrder(req) ? new Response(null, { status: 204 }) : res);
        await assert.rejects(order(client), isHybridError("invalid_signature"));
        assert.equal(server.state.orders, 1);

        // A genuine signed 204 to another request (S, J: a bodiless answer to a sealed request;
        // E: the app's plain answer), from another server with the same signing key.
        let signed204 = null;
        const probe = mockServer();
        probe.state.proxy = async (req, res) => {
          if (res.status === 204) signed204 = res.clone();
          return res;
        };
        const prober = await connect(probe, { format, ...extra(), encryptResponse: false });
        await prober.fetch("/api/nothing", { method: "POST", body: {} });
        assert.ok(signed204 && signed204.headers.get("signature-input"));
        server.state.proxy = async (req, res) => (isOrder(req) ? signed204.clone() : res);
        await assert.rejects(order(client), isHybridError("invalid_signature"));
        assert.equal(server.state.orders, 2);
        assert.equal(logOf(server, "/api/order").length, 2);
      });

      test("200 → an empty 200 where a sealed body was due", async () => {
        const server = mockServer();
        const client = await connect(server, { format, ...extra() });
        server.state.proxy = async (req, res) => (isOrder(req) ? new Response("", { status: 200 }) : res);
        await assert.rejects(order(client), isHybridError("invalid_signature"));
        assert.equal(server.state.orders, 1);
      });

      test("a genuine refusal bound to this request is verified and retried; the app runs once", async () => {
        const server = mockServer();
        const client = await connect(server, { format, ...extra() });
        server.state.failNext = [format === "session" ? "invalid_session" : "unknown_key"];
        const res = await order(client);
        assert.equal(res.status, 200);
        assert.deepEqual(await res.json(), { order: 1 });
        assert.equal(logOf(server, "/api/order").length, 2);
      });
    });
  }
});

describe("options", () => {
  test("bad options are TypeErrors", () => {
    assert.throws(() => new HybridClient({ format: "xml" }), TypeError);
    assert.throws(() => new HybridClient({ format: "session", deviceId: "has space" }), TypeError);
  });

  test("pinnedSigningKid defaults to pinnedKid; null lifts the pin", () => {
    assert.equal(new HybridClient({ format: "jwe", pinnedKid: "k" }).pinnedSigningKid, "k");
    assert.equal(new HybridClient({ format: "jwe", pinnedKid: "k", pinnedSigningKid: null }).pinnedSigningKid, null);
    assert.equal(new HybridClient({ format: "jwe" }).pinnedSigningKid, null);
  });
});
