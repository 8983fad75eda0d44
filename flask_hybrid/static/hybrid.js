/**
 * flask-hybrid browser module: application-level encryption for calls to a flask-hybrid API.
 *
 * One ES module, no build step, no dependencies: Web Crypto (`crypto.subtle`) only, so it runs
 * unchanged in browsers (secure contexts: https or localhost) and in Node 20+.
 *
 * It speaks the three wire formats of PROTOCOL.md:
 *   - "session"  = format S: handshake, then RSA-OAEP-256 wrapped CEK + AES-256-GCM envelopes;
 *   - "envelope" = format E: stateless JSEncrypt-compatible envelopes (PKCS#1 v1.5 via the page's
 *                  JSEncrypt instance, or RSA-OAEP-256 via Web Crypto);
 *   - "jwe"      = format J: JWE compact (RSA-OAEP-256 / A256GCM) with htm/htu/iat/jti bound to
 *                  the ciphertext, answered by a `dir` JWE under the same CEK;
 *   - "ehbp"     = format H: EHBP, the Encrypted HTTP Body Protocol: the body sealed with HPKE
 *                  (RFC 9180, X25519 / HKDF-SHA256 / AES-256-GCM) to the key of
 *                  `/.well-known/hpke-keys` as length-prefixed frames, streamed both ways when
 *                  the transport allows; the answer's frames opened as they arrive. Interoperable
 *                  with EHBP's published clients and servers. EHBP binds no method, path or time
 *                  and has no replay protection (docs/ehbp-notes.md).
 *
 * Every answer is authenticated: a sealed one by AES-GCM under the request's CEK, any other (a
 * refusal, a 204, format E's plain answer, the handshake's) by the server's RFC 9421 signature
 * bound to the request it answers (PROTOCOL.md, "Request-bound response signatures"), which the
 * client checks against the RFC 9530 Content-Digest it sent. Only a refusal so signed is retried.
 *
 *     import { HybridClient } from "/hybrid/static/hybrid.js";
 *     const client = await HybridClient.connect({ format: "jwe", baseUrl: "" });
 *     const res = await client.fetch("/api/orders", { method: "POST", body: JSON.stringify(order) });
 *     await client.close();
 *
 * Besides the client, small pure building blocks are exported (base64 helpers, the per-format
 * sealers and openers); tests and the demo page use them. Their optional `cek` / `iv` / `jti` /
 * `iat` parameters exist so known-answer vectors can be reproduced: leave them out in real use.
 */

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/** Error codes a flask-hybrid server may answer with (PROTOCOL.md, "Errors"). */
export const SERVER_ERROR_CODES = Object.freeze([
  "invalid_payload",
  "invalid_session",
  "unknown_key",
  "replayed_request",
  "payload_too_large",
  "encryption_required",
  "rate_limited",
  "store_unavailable",
  "key_config_mismatch",
]);

/** The HTTP status of each code of the error table: a refusal must carry its code's status. */
export const SERVER_ERROR_STATUS = Object.freeze({
  invalid_payload: 400,
  invalid_session: 401,
  unknown_key: 401,
  replayed_request: 409,
  payload_too_large: 413,
  encryption_required: 415,
  rate_limited: 429,
  store_unavailable: 503,
  key_config_mismatch: 422,
});

/**
 * Every failure of the protocol surfaces as a HybridError. `code` is one of SERVER_ERROR_CODES
 * (the server refused the request) or a client-side code: `invalid_signature` (an answer that
 * must carry a request-bound signature — a refusal, a bodiless or unsealed answer to an
 * encrypted request, the handshake's answer — has none, or one that does not verify or answers
 * another request) or `invalid_response` (a response that does not open, is malformed, or is not
 * sealed when it must be). `status` is the HTTP status of the response concerned (0 when there
 * was none); `retryAfter` is the number of seconds of a 429's `Retry-After` (null otherwise).
 */
export class HybridError extends Error {
  /**
   * @param {string} code
   * @param {string} [message]
   * @param {{status?: number, retryAfter?: number|null, cause?: unknown}} [details]
   */
  constructor(code, message, details = {}) {
    super(message || code, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = "HybridError";
    this.code = code;
    this.status = details.status ?? 0;
    this.retryAfter = details.retryAfter ?? null;
  }
}

/**
 * Refusals whose request-bound signature verified: the server itself says it refused *this*
 * request, so the app never ran it. Only those are retried.
 */
const verifiedRefusals = new WeakSet();

const invalidResponse = (message, status = 0, cause) =>
  new HybridError("invalid_response", message, { status, cause });

// ---------------------------------------------------------------------------------------------
// Encoding helpers
// ---------------------------------------------------------------------------------------------

const encoder = new TextEncoder();
const lenientDecoder = new TextDecoder("utf-8");
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

/** UTF-8 bytes of a string. */
export const utf8Encode = (text) => encoder.encode(text);
/** Text of UTF-8 bytes; throws a TypeError on invalid UTF-8. */
export const utf8Decode = (bytes) => strictDecoder.decode(bytes);

/** Coerce a string / ArrayBuffer / ArrayBufferView to a Uint8Array (strings as UTF-8). */
export function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (typeof data === "string") return encoder.encode(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError("expected a string, an ArrayBuffer or a typed array");
}

const CHUNK = 0x8000;

function bytesToBinary(bytes) {
  let out = "";
  for (let i = 0; i < bytes.length; i += CHUNK) {
    out += String.fromCharCode.apply(null, bytes.subarray(i, i + CHUNK));
  }
  return out;
}

function binaryToBytes(binary) {
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/** Standard base64 with padding (RFC 4648 §4). */
export function b64encode(data) {
  return btoa(bytesToBinary(toBytes(data)));
}

/**
 * Strict standard base64: the standard alphabet, padding required, no whitespace.
 * Throws a TypeError otherwise.
 */
export function b64decode(text) {
  if (typeof text !== "string" || text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) {
    throw new TypeError("not strict base64");
  }
  return binaryToBytes(atob(text));
}

/** URL-safe base64 without padding, as JOSE uses. */
export function b64urlEncode(data) {
  return b64encode(data).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Strict URL-safe base64 without padding. Throws a TypeError otherwise. */
export function b64urlDecode(text) {
  if (typeof text !== "string" || text.length % 4 === 1 || !/^[A-Za-z0-9_-]*$/.test(text)) {
    throw new TypeError("not strict base64url");
  }
  const std = text.replace(/-/g, "+").replace(/_/g, "/");
  return binaryToBytes(atob(std + "===".slice((std.length + 3) % 4)));
}

/** `n` cryptographically random bytes. */
export function randomBytes(n) {
  return cryptoApi().getRandomValues(new Uint8Array(n));
}

function concatBytes(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Web Crypto primitives
// ---------------------------------------------------------------------------------------------

function cryptoApi() {
  const api = globalThis.crypto;
  if (!api || !api.subtle) {
    throw new Error(
      "flask-hybrid needs Web Crypto (crypto.subtle): serve the page over https or from localhost",
    );
  }
  return api;
}
const subtle = () => cryptoApi().subtle;

const RSA_OAEP = { name: "RSA-OAEP", hash: "SHA-256" }; // MGF1 uses the same hash: OAEP-256
const RSA_PKCS1_SIG = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" };
const CEK_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const MIN_MODULUS_BYTES = 256; // RSA >= 2048 bits (PROTOCOL.md, identity keys)

/** DER bytes of the first `-----BEGIN PUBLIC KEY-----` block of a PEM text. */
export function pemToDer(pem) {
  const m = /-----BEGIN PUBLIC KEY-----([A-Za-z0-9+/=\s]*)-----END PUBLIC KEY-----/.exec(String(pem));
  if (!m) throw new TypeError("not a PEM SubjectPublicKeyInfo (BEGIN PUBLIC KEY)");
  return b64decode(m[1].replace(/\s+/g, ""));
}

/** PEM SubjectPublicKeyInfo text of DER bytes. */
export function derToPem(der) {
  const body = b64encode(der).replace(/.{1,64}/g, "$&\n");
  return `-----BEGIN PUBLIC KEY-----\n${body}-----END PUBLIC KEY-----\n`;
}

/**
 * Import an RSA public key for RSA-OAEP-256 encryption (`use` "encrypt", the default) or
 * RSASSA-PKCS1-v1_5 SHA-256 verification (`use` "verify"). `key` is a PEM SubjectPublicKeyInfo
 * or a JWK (only `n` and `e` are read, so a JWK's own `alg`/`use` never conflict).
 * @returns {Promise<CryptoKey>}
 */
export async function importRsaPublicKey(key, use = "encrypt", extractable = false) {
  const alg = use === "verify" ? RSA_PKCS1_SIG : RSA_OAEP;
  if (typeof key === "string") {
    return subtle().importKey("spki", pemToDer(key), alg, extractable, [use]);
  }
  const jwk = { kty: "RSA", n: key.n, e: key.e, ext: true };
  return subtle().importKey("jwk", jwk, alg, extractable, [use]);
}

/** `{n, e}` of a PEM public key (as b64url, minimal). */
export async function pemToJwk(pem) {
  const key = await importRsaPublicKey(pem, "encrypt", true);
  const { n, e } = await subtle().exportKey("jwk", key);
  return { kty: "RSA", n, e };
}

/** PEM of an RSA public JWK. */
export async function jwkToPem(jwk) {
  const key = await importRsaPublicKey(jwk, "encrypt", true);
  return derToPem(new Uint8Array(await subtle().exportKey("spki", key)));
}

function stripLeadingZeros(bytes) {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  return bytes.subarray(i);
}

/**
 * RFC 7638 thumbprint (SHA-256, b64url) of an RSA public JWK: the `kid` flask-hybrid gives its
 * identity keys.
 * @returns {Promise<string>}
 */
export async function jwkThumbprint(jwk) {
  // Re-encode both members canonically (strict b64url, no leading zero octets): this both
  // validates them and keeps any odd character out of the hashed JSON.
  const n = b64urlEncode(stripLeadingZeros(b64urlDecode(jwk.n)));
  const e = b64urlEncode(stripLeadingZeros(b64urlDecode(jwk.e)));
  const canonical = `{"e":"${e}","kty":"RSA","n":"${n}"}`;
  return b64urlEncode(new Uint8Array(await subtle().digest("SHA-256", encoder.encode(canonical))));
}

/** RSA-OAEP-256 encryption of `data` under an imported (or PEM / JWK) public key. */
export async function rsaOaepEncrypt(publicKey, data) {
  const key = publicKey instanceof CryptoKey ? publicKey : await importRsaPublicKey(publicKey);
  return new Uint8Array(await subtle().encrypt({ name: "RSA-OAEP" }, key, toBytes(data)));
}

/**
 * Import raw CEK bytes as a non-extractable AES-256-GCM key.
 * @returns {Promise<CryptoKey>}
 */
export async function importCek(raw) {
  const bytes = toBytes(raw);
  if (bytes.length !== CEK_BYTES) throw new TypeError("a CEK is exactly 32 bytes");
  return subtle().importKey("raw", bytes, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
}

const asAesKey = async (key) => (key instanceof CryptoKey ? key : importCek(key));

/**
 * AES-256-GCM encryption. `key`: a CryptoKey or raw 32 bytes; `iv` defaults to 12 random bytes.
 * @returns {Promise<{iv: Uint8Array, ciphertext: Uint8Array, tag: Uint8Array}>}
 */
export async function aesGcmSeal(key, plaintext, { iv, aad } = {}) {
  const nonce = iv ? toBytes(iv) : randomBytes(IV_BYTES);
  if (nonce.length !== IV_BYTES) throw new TypeError("an IV is exactly 12 bytes");
  const params = { name: "AES-GCM", iv: nonce, tagLength: 128 };
  if (aad) params.additionalData = toBytes(aad);
  const out = new Uint8Array(await subtle().encrypt(params, await asAesKey(key), toBytes(plaintext)));
  return {
    iv: nonce,
    ciphertext: out.subarray(0, out.length - TAG_BYTES),
    tag: out.subarray(out.length - TAG_BYTES),
  };
}

/**
 * AES-256-GCM decryption. Any failure (wrong sizes, wrong key, failed tag) throws a HybridError
 * `invalid_response`.
 * @returns {Promise<Uint8Array>}
 */
export async function aesGcmOpen(key, iv, ciphertext, tag, aad) {
  if (iv.length !== IV_BYTES || tag.length !== TAG_BYTES) {
    throw invalidResponse("sealed response with a wrong IV or tag length");
  }
  const params = { name: "AES-GCM", iv, tagLength: 128 };
  if (aad) params.additionalData = toBytes(aad);
  try {
    return new Uint8Array(await subtle().decrypt(params, await asAesKey(key), concatBytes(ciphertext, tag)));
  } catch (err) {
    throw invalidResponse("the sealed response failed authentication", 0, err);
  }
}

/**
 * Verify `X-Response-Signature` (b64 RSASSA-PKCS1-v1_5 SHA-256) over the exact body bytes.
 * `key`: a verify CryptoKey, a PEM or a JWK. Malformed signatures verify false.
 * @returns {Promise<boolean>}
 */
export async function verifySignature(key, signatureB64, body) {
  let signature;
  try {
    signature = b64decode(signatureB64);
  } catch {
    return false;
  }
  const verifyKey = key instanceof CryptoKey ? key : await importRsaPublicKey(key, "verify");
  return subtle().verify({ name: "RSASSA-PKCS1-v1_5" }, verifyKey, signature, toBytes(body));
}

// ---------------------------------------------------------------------------------------------
// Structured field values (RFC 8941): the subset the signature headers use
// ---------------------------------------------------------------------------------------------

const SF_KEY = /[a-z*][a-z0-9_\-.*]*/y;
const SF_TOKEN = /[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*/y;
const SF_INTEGER = /-?[0-9]+/y;
const SF_BYTES = /:([A-Za-z0-9+/=]*):/y;

/** A strict RFC 8941 parser over one field value; every defect throws a SyntaxError. */
class StructuredFieldParser {
  constructor(text) {
    if (typeof text !== "string") throw new SyntaxError("a structured field value is a string");
    this.text = text;
    this.pos = 0;
  }

  fail(what) {
    throw new SyntaxError(`structured field: ${what} at offset ${this.pos}`);
  }

  peek() {
    return this.text[this.pos];
  }

  match(re) {
    re.lastIndex = this.pos;
    const m = re.exec(this.text);
    if (m) this.pos = re.lastIndex;
    return m;
  }

  skip(chars) {
    while (this.pos < this.text.length && chars.includes(this.text[this.pos])) this.pos++;
  }

  key() {
    const m = this.match(SF_KEY);
    if (!m) this.fail("expected a key");
    return m[0];
  }

  bareItem() {
    const c = this.peek();
    if (c === "-" || (c >= "0" && c <= "9")) {
      const m = this.match(SF_INTEGER);
      if (!m || m[0].replace("-", "").length > 15) this.fail("expected an integer of 1 to 15 digits");
      if (this.peek() === ".") this.fail("decimals are not supported");
      return Number(m[0]);
    }
    if (c === '"') return this.string();
    if (c === ":") {
      const m = this.match(SF_BYTES);
      if (!m) this.fail("unterminated byte sequence");
      try {
        return b64decode(m[1]);
      } catch {
        return this.fail("a byte sequence that is not strict base64");
      }
    }
    if (c === "?") {
      const value = this.text[this.pos + 1];
      if (value !== "0" && value !== "1") this.fail("expected ?0 or ?1");
      this.pos += 2;
      return value === "1";
    }
    const m = this.match(SF_TOKEN);
    if (!m) this.fail("expected an item");
    return Object.freeze({ token: m[0] });
  }

  string() {
    let out = "";
    for (this.pos++; ; ) {
      if (this.pos >= this.text.length) this.fail("unterminated string");
      const c = this.text[this.pos++];
      if (c === '"') return out;
      if (c === "\\") {
        const escaped = this.text[this.pos++];
        if (escaped !== '"' && escaped !== "\\") this.fail("a bad escape in a string");
        out += escaped;
      } else if (c < " " || c > "~") {
        this.fail("a character outside printable ASCII in a string");
      } else {
        out += c;
      }
    }
  }

  params() {
    const params = new Map();
    while (this.peek() === ";") {
      this.pos++;
      this.skip(" ");
      const key = this.key();
      let value = true;
      if (this.peek() === "=") {
        this.pos++;
        value = this.bareItem();
      }
      params.set(key, value); // a repeated key overwrites (RFC 8941 §4.2.3.2)
    }
    return params;
  }

  member() {
    if (this.peek() !== "(") {
      const value = this.bareItem();
      return { value, params: this.params() };
    }
    this.pos++;
    const items = [];
    for (;;) {
      this.skip(" ");
      if (this.peek() === ")") {
        this.pos++;
        return { value: items, params: this.params() };
      }
      const value = this.bareItem();
      items.push({ value, params: this.params() });
      if (this.peek() !== " " && this.peek() !== ")") this.fail("expected a space or ) in an inner list");
    }
  }

  dictionary() {
    const dict = new Map();
    this.skip(" ");
    if (this.pos >= this.text.length) this.fail("an empty dictionary");
    for (;;) {
      const key = this.key();
      let member;
      if (this.peek() === "=") {
        this.pos++;
        member = this.member();
      } else {
        member = { value: true, params: this.params() };
      }
      dict.set(key, member); // a repeated key overwrites (RFC 8941 §4.2.2)
      this.skip(" \t");
      if (this.pos >= this.text.length) return dict;
      if (this.peek() !== ",") this.fail("expected a comma");
      this.pos++;
      this.skip(" \t");
      if (this.pos >= this.text.length) this.fail("a trailing comma");
    }
  }
}

/**
 * Parse an RFC 8941 dictionary field value (as `Signature-Input`, `Signature` and
 * `Content-Digest` are). Strict, for the subset flask-hybrid uses: members are items or inner
 * lists with parameters; bare items are strings, integers (a JS number), booleans, byte
 * sequences (a Uint8Array, strict padded base64) and tokens (`{token}`). Decimals, dates and
 * display strings are refused. Any defect throws a SyntaxError.
 * @returns {Map<string, {value: any, params: Map<string, any>}>} an inner list's `value` is an array of `{value, params}`
 */
export function parseStructuredDictionary(text) {
  return new StructuredFieldParser(text).dictionary();
}

function serializeBareItem(value) {
  if (typeof value === "boolean") return value ? "?1" : "?0";
  if (typeof value === "number" && Number.isInteger(value)) return String(value);
  if (typeof value === "string") return `"${value.replace(/[\\"]/g, "\\$&")}"`;
  if (value instanceof Uint8Array) return `:${b64encode(value)}:`;
  if (value && typeof value.token === "string") return value.token;
  throw new TypeError("not a structured field item of the supported subset");
}

function serializeParams(params) {
  let out = "";
  for (const [key, value] of params) out += value === true ? `;${key}` : `;${key}=${serializeBareItem(value)}`;
  return out;
}

const serializeItem = ({ value, params }) => serializeBareItem(value) + serializeParams(params);
const serializeInnerList = ({ value, params }) => `(${value.map(serializeItem).join(" ")})${serializeParams(params)}`;

// ---------------------------------------------------------------------------------------------
// Request-bound response signatures (RFC 9421 over RFC 9530 digests; PROTOCOL.md)
// ---------------------------------------------------------------------------------------------

const SIGNATURE_LABEL = "hybrid";
const SIGNATURE_TAG = "flask-hybrid";
/** Names flask-hybrid's own refusals, covered by their signature (lower case, as covered). */
const REFUSAL_HEADER = "x-hybrid-refusal";
const SIGNATURE_ALG = "rsa-v1_5-sha256";
/** Format S's sealed answers: an HMAC under a key derived from the request's CEK (keyid "cek"). */
const ANSWER_ALG = "hmac-sha256";
const ANSWER_KEYID = "cek";
const ANSWER_KEY_INFO = "flask-hybrid answer binding";
/** Request headers that carry the key of a bodiless request (S and J header forms). */
const KEY_HEADERS = ["x-hybrid-jwe", "x-encrypted-aes-key"];
const DIGEST_ALGORITHMS = { "sha-256": "SHA-256", "sha-512": "SHA-512" };

function bytesEqual(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/**
 * The RFC 9530 `Content-Digest` field value of a body: `sha-256=:<b64 of SHA-256>:`. `body` is
 * bytes or a string (as UTF-8); null/undefined is the empty body.
 * @returns {Promise<string>}
 */
export async function contentDigest(body) {
  const digest = new Uint8Array(await subtle().digest("SHA-256", toBytes(body ?? "")));
  return `sha-256=:${b64encode(digest)}:`;
}

/**
 * Whether a `Content-Digest` field value describes `body`: it must have a `sha-256` member, and
 * every `sha-256` / `sha-512` member must be that digest of the bytes. Other algorithms are
 * ignored (RFC 9530 §2).
 * @returns {Promise<boolean>}
 */
export async function contentDigestMatches(fieldValue, body) {
  let members;
  try {
    members = parseStructuredDictionary(fieldValue);
  } catch {
    return false;
  }
  if (!members.has("sha-256")) return false;
  const bytes = toBytes(body ?? "");
  for (const [name, algorithm] of Object.entries(DIGEST_ALGORITHMS)) {
    const member = members.get(name);
    if (member === undefined) continue;
    if (!(member.value instanceof Uint8Array)) return false;
    const digest = new Uint8Array(await subtle().digest(algorithm, bytes));
    if (!bytesEqual(digest, member.value)) return false;
  }
  return true;
}

const asHeaders = (headers) => (headers instanceof Headers ? headers : new Headers(headers ?? undefined));

/**
 * The components (serialized, e.g. `"@method";req`) a response to this request must cover:
 * `"@status"`, `"content-digest"`, `"@method";req`, `"content-digest";req` when the request
 * carried `Content-Digest`, and `"x-hybrid-jwe";req` / `"x-encrypted-aes-key";req` when it
 * carried that key header (the bodiless J and S forms).
 * @returns {string[]}
 */
export function requiredSignatureComponents(requestHeaders) {
  const sent = asHeaders(requestHeaders);
  const required = ['"@status"', '"content-digest"', '"@method";req'];
  if (sent.has("content-digest")) required.push('"content-digest";req');
  for (const name of KEY_HEADERS) if (sent.has(name)) required.push(`"${name}";req`);
  return required;
}

const badSignature = (message, status = 0) => new HybridError("invalid_signature", message, { status });

/** A component's value (RFC 9421 §2): derived ones, or a field value as sent, trimmed. */
function componentValue(name, fromRequest, request, response) {
  if (name === "@status") {
    if (fromRequest) throw badSignature('"@status";req names no part of a request');
    return String(response.status).padStart(3, "0");
  }
  if (name === "@method") {
    if (!fromRequest) throw badSignature('"@method" is a component of the request: ;req is needed');
    return request.method;
  }
  if (name.startsWith("@")) throw badSignature(`the signature covers ${name}, which this client does not rebuild`);
  const value = (fromRequest ? request.headers : response.headers).get(name);
  if (value === null) {
    throw badSignature(`the signature covers ${name}${fromRequest ? " of the request" : ""}, which is absent`);
  }
  return value.replace(/^[ \t]+|[ \t]+$/g, "");
}

/**
 * Read the `hybrid` signature of a response and rebuild its RFC 9421 signature base from the
 * request as the client itself sent it (`method`, `headers`) and the response as received
 * (`status`, `headers`). No cryptography happens here, so nothing it returns is trusted yet.
 * Checks the label, `tag="flask-hybrid"`, `alg="rsa-v1_5-sha256"`, a string `keyid`, an integer
 * `created`, and that every required component is covered. Any defect throws HybridError
 * `invalid_signature`.
 * @returns {{base: string, keyid: string, created: number, components: string[], signature: Uint8Array}}
 */
export function unverifiedResponseSignature({ request, response }) {
  const sentRequest = { method: String(request.method), headers: asHeaders(request.headers) };
  const received = { status: response.status, headers: asHeaders(response.headers) };
  const status = received.status;
  const inputField = received.headers.get("signature-input");
  const signatureField = received.headers.get("signature");
  if (inputField === null || signatureField === null) {
    throw badSignature(`the answer (${status}) carries no request-bound signature`, status);
  }
  let input;
  let signature;
  try {
    input = parseStructuredDictionary(inputField).get(SIGNATURE_LABEL);
    signature = parseStructuredDictionary(signatureField).get(SIGNATURE_LABEL);
  } catch (err) {
    throw new HybridError("invalid_signature", `malformed signature fields: ${err.message}`, { status, cause: err });
  }
  if (!input || !Array.isArray(input.value) || !signature || !(signature.value instanceof Uint8Array)) {
    throw badSignature(`the answer (${status}) has no "${SIGNATURE_LABEL}" signature`, status);
  }
  const params = input.params;
  const alg = params.get("alg");
  if (params.get("tag") !== SIGNATURE_TAG || (alg !== SIGNATURE_ALG && alg !== ANSWER_ALG)) {
    throw badSignature(`the signature is not tag "${SIGNATURE_TAG}", alg "${SIGNATURE_ALG}"`, status);
  }
  const keyid = params.get("keyid");
  const created = params.get("created");
  if (typeof keyid !== "string" || !keyid || !Number.isInteger(created)) {
    throw badSignature("the signature has no keyid or created", status);
  }

  const lines = [];
  const components = [];
  for (const item of input.value) {
    if (typeof item.value !== "string") throw badSignature("a covered component that is not a string", status);
    const name = item.value;
    for (const [param, value] of item.params) {
      if (param !== "req" || value !== true) throw badSignature(`component parameter ;${param} is not supported`, status);
    }
    const fromRequest = item.params.has("req");
    if (name !== name.toLowerCase()) throw badSignature(`component ${name} is not lower case`, status);
    const id = serializeItem(item);
    if (components.includes(id)) throw badSignature(`component ${id} is covered twice`, status);
    components.push(id);
    let value;
    try {
      value = componentValue(name, fromRequest, sentRequest, received);
    } catch (err) {
      err.status = status;
      throw err;
    }
    if (/[^\x20-\x7e]/.test(value)) throw badSignature(`component ${id} is not printable ASCII`, status);
    lines.push(`${id}: ${value}`);
  }
  for (const id of requiredSignatureComponents(sentRequest.headers)) {
    if (!components.includes(id)) throw badSignature(`the signature does not cover ${id}: not bound to this request`, status);
  }
  lines.push(`"@signature-params": ${serializeInnerList(input)}`);
  return { base: lines.join("\n"), alg, keyid, created, components, signature: signature.value };
}

/**
 * Verify that a response carries a valid flask-hybrid signature bound to this request
 * (PROTOCOL.md, "How a client verifies an answer"):
 *   1-2. the `hybrid` signature's parameters and covered components (unverifiedResponseSignature);
 *   3.   the base rebuilt from `request` (what the client itself sent: `method`, `headers`) and
 *        `response` (`status`, `headers`, `body` as received), and `Content-Digest` = the body's;
 *   4.   RSASSA-PKCS1-v1_5 SHA-256 under `keyFor(keyid, alg)` — a CryptoKey (verify), PEM or
 *        JWK of the server's signing key, or null when keyid names none; or, for alg
 *        "hmac-sha256" (format S's sealed answers), the HMAC CryptoKey of `deriveAnswerKey()`.
 * Resolves to the keyid; rejects with HybridError `invalid_signature` on any defect.
 * @returns {Promise<string>}
 */
export async function verifyResponseSignature({ request, response, keyFor }) {
  const { base, alg, keyid, signature } = unverifiedResponseSignature({ request, response });
  const status = response.status;
  const digest = asHeaders(response.headers).get("content-digest");
  if (digest === null || !(await contentDigestMatches(digest, response.body))) {
    throw badSignature("the answer's Content-Digest does not match its body", status);
  }
  const key = await keyFor(keyid, alg);
  if (!key) throw badSignature(`the signature's keyid ${keyid} is not a signing key of the server`, status);
  let valid;
  try {
    if (alg === ANSWER_ALG) {
      if (!(key instanceof CryptoKey) || key.algorithm.name !== "HMAC") throw new TypeError("not an HMAC key");
      valid = await subtle().verify({ name: "HMAC" }, key, signature, encoder.encode(base));
    } else {
      const verifyKey = key instanceof CryptoKey ? key : await importRsaPublicKey(key, "verify");
      valid = await subtle().verify({ name: "RSASSA-PKCS1-v1_5" }, verifyKey, signature, encoder.encode(base));
    }
  } catch (err) {
    throw new HybridError("invalid_signature", "the signing key is not a usable RSA key", { status, cause: err });
  }
  if (!valid) throw badSignature("the answer's signature does not verify", status);
  return keyid;
}

// ---------------------------------------------------------------------------------------------
// Content encryption keys
// ---------------------------------------------------------------------------------------------

/**
 * Make (or reuse) a CEK and its wrapped form. With `cekKey` + `wrapped` given they are reused as
 * they are. Otherwise the raw CEK (`cek`, or 32 fresh random bytes) is wrapped FIRST by `wrap`,
 * then imported as a non-extractable CryptoKey, and random raw bytes we made are zeroed.
 */
async function prepareCek(wrap, { cek, cekKey, wrapped, answerKey = false }) {
  if (cekKey && wrapped) return { cekKey, wrapped };
  const own = cek === undefined;
  const raw = own ? randomBytes(CEK_BYTES) : toBytes(cek);
  if (raw.length !== CEK_BYTES) throw new TypeError("a CEK is exactly 32 bytes");
  try {
    const wrappedKey = await wrap(raw);
    const prepared = { cekKey: await importCek(raw), wrapped: wrappedKey };
    if (answerKey) prepared.answerKey = await deriveAnswerKey(raw);
    return prepared;
  } finally {
    if (own) raw.fill(0);
  }
}

/**
 * The HMAC key (verify only) that binds format S's sealed answers to their request:
 * HKDF-SHA256 of the raw CEK, info "flask-hybrid answer binding", no salt (PROTOCOL.md).
 * @returns {Promise<CryptoKey>}
 */
export async function deriveAnswerKey(rawCek) {
  const base = await subtle().importKey("raw", toBytes(rawCek), "HKDF", false, ["deriveKey"]);
  return subtle().deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: encoder.encode(ANSWER_KEY_INFO) },
    base,
    { name: "HMAC", hash: "SHA-256", length: 256 },
    false,
    ["verify"],
  );
}

function requireObject(value, what) {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw invalidResponse(`${what} is not a JSON object`);
  }
  return value;
}

function decodeField(decode, value, what) {
  try {
    return decode(value);
  } catch (err) {
    throw invalidResponse(`${what} is not valid base64`, 0, err);
  }
}

// ---------------------------------------------------------------------------------------------
// Format S (session-based)
// ---------------------------------------------------------------------------------------------

/**
 * Seal a format S request body. The CEK is wrapped with RSA-OAEP-256 under the session public key
 * (`publicKey`: CryptoKey, PEM or JWK), unless `cekKey` + `encryptedAesKey` are given (reuse).
 * @returns {Promise<{envelope: {encryptedAesKey: string, encryptedData: string, iv: string, authTag: string}, cekKey: CryptoKey, encryptedAesKey: string}>}
 */
export async function sealSessionRequest({ publicKey, plaintext, cek, iv, cekKey, encryptedAesKey }) {
  const prepared = await prepareCek(async (raw) => b64encode(await rsaOaepEncrypt(publicKey, raw)), {
    cek,
    cekKey,
    wrapped: encryptedAesKey,
  });
  const sealed = await aesGcmSeal(prepared.cekKey, toBytes(plaintext), { iv });
  return {
    envelope: {
      encryptedAesKey: prepared.wrapped,
      encryptedData: b64encode(sealed.ciphertext),
      iv: b64encode(sealed.iv),
      authTag: b64encode(sealed.tag),
    },
    cekKey: prepared.cekKey,
    encryptedAesKey: prepared.wrapped,
  };
}

/**
 * Open a format S sealed body `{"encryptedData","iv","authTag"}` (a response, or the handshake
 * response under the handshake `aesKey`). `key`: CryptoKey or raw CEK bytes.
 * @returns {Promise<Uint8Array>}
 */
export async function openSessionResponse(key, envelope) {
  const env = requireObject(envelope, "the sealed response");
  for (const field of ["encryptedData", "iv", "authTag"]) {
    if (typeof env[field] !== "string") throw invalidResponse(`sealed response without ${field}`);
  }
  const ciphertext = decodeField(b64decode, env.encryptedData, "encryptedData");
  const iv = decodeField(b64decode, env.iv, "iv");
  const tag = decodeField(b64decode, env.authTag, "authTag");
  return aesGcmOpen(key, iv, ciphertext, tag);
}

/**
 * Open the S handshake's 201 body under the handshake `aesKey` and check its fields.
 * @returns {Promise<{token: string, publicKey: string, sessionId: string, expiresIn: number}>}
 */
export async function openHandshakeResponse(key, envelope) {
  const plaintext = await openSessionResponse(key, envelope);
  let info;
  try {
    info = JSON.parse(utf8Decode(plaintext));
  } catch (err) {
    throw invalidResponse("the handshake response is not UTF-8 JSON", 0, err);
  }
  requireObject(info, "the handshake response");
  if (
    typeof info.token !== "string" ||
    typeof info.publicKey !== "string" ||
    typeof info.sessionId !== "string" ||
    typeof info.expiresIn !== "number"
  ) {
    throw invalidResponse("the handshake response lacks token, publicKey, sessionId or expiresIn");
  }
  return info;
}

// ---------------------------------------------------------------------------------------------
// Format E (stateless envelope, JSEncrypt-compatible)
// ---------------------------------------------------------------------------------------------

/**
 * Seal a format E request body. With `jsencrypt` (a JSEncrypt instance whose public key is
 * already set to the server's), `ek` = jsencrypt.encrypt(b64(CEK)) and alg "RSA+AES-GCM"
 * (PKCS#1 v1.5, which Web Crypto cannot do). Without it, `ek` = RSA-OAEP-256 of the raw 32-byte
 * CEK under `publicKey` (CryptoKey, PEM or JWK) and alg "RSA-OAEP-256+AES-GCM". `kid` is added
 * when given.
 * With `answerKey: true`, also the HMAC key that binds the server's answers to this request
 * (`deriveAnswerKey`).
 * @returns {Promise<{envelope: {alg: string, ek: string, iv: string, ct: string, kid?: string}, cekKey: CryptoKey, answerKey?: CryptoKey}>}
 */
export async function sealEnvelopeRequest({ plaintext, publicKey, jsencrypt, kid, cek, iv, answerKey = false }) {
  const alg = jsencrypt ? "RSA+AES-GCM" : "RSA-OAEP-256+AES-GCM";
  const wrap = jsencrypt
    ? async (raw) => {
        const ek = jsencrypt.encrypt(b64encode(raw));
        if (typeof ek !== "string" || !ek) {
          throw new Error("jsencrypt.encrypt failed: was setPublicKey given the server key?");
        }
        return ek;
      }
    : async (raw) => b64encode(await rsaOaepEncrypt(publicKey, raw));
  const { cekKey, wrapped, answerKey: answerKeyOut } = await prepareCek(wrap, { cek, answerKey });
  const sealed = await aesGcmSeal(cekKey, toBytes(plaintext), { iv });
  const envelope = {
    alg,
    ek: wrapped,
    iv: b64encode(sealed.iv),
    ct: b64encode(concatBytes(sealed.ciphertext, sealed.tag)),
  };
  if (kid) envelope.kid = kid;
  return answerKeyOut ? { envelope, cekKey, answerKey: answerKeyOut } : { envelope, cekKey };
}

/**
 * Open a format E sealed response `{"alg":"AES-GCM","iv","ct"}` (ct = ciphertext || tag).
 * @returns {Promise<Uint8Array>}
 */
export async function openEnvelopeResponse(key, envelope) {
  const env = requireObject(envelope, "the sealed response");
  if (env.alg !== "AES-GCM" || typeof env.iv !== "string" || typeof env.ct !== "string") {
    throw invalidResponse('not a {"alg":"AES-GCM","iv","ct"} sealed response');
  }
  const iv = decodeField(b64decode, env.iv, "iv");
  const ct = decodeField(b64decode, env.ct, "ct");
  if (ct.length < TAG_BYTES) throw invalidResponse("sealed response shorter than its tag");
  return aesGcmOpen(key, iv, ct.subarray(0, ct.length - TAG_BYTES), ct.subarray(ct.length - TAG_BYTES));
}

// ---------------------------------------------------------------------------------------------
// Format J (JWE compact)
// ---------------------------------------------------------------------------------------------

/**
 * Build a format J request JWE compact: protected header (in this member order)
 * `{"alg":"RSA-OAEP-256","enc":"A256GCM","kid","htm","htu","iat","jti"[,"cty"]}`, the CEK wrapped
 * with RSA-OAEP-256 under `publicKey` (CryptoKey, PEM or JWK), AAD = the b64url header.
 *
 * `method` is upper-cased into `htm`; `target` is `htu` (path and query exactly as sent). `cty` is
 * left out when null/undefined. `payload` may be empty (the `X-Hybrid-JWE` header form).
 * `jti` defaults to 16 random bytes (b64url), `iat` to now. `cekKey` + `encryptedKey` reuse a
 * CEK (b64url wrapped key); `cek` / `iv` fix them (known-answer tests only).
 * @returns {Promise<{jwe: string, jti: string, cekKey: CryptoKey, encryptedKey: string, protectedHeader: string}>}
 */
export async function sealJweRequest({
  publicKey,
  kid,
  method,
  target,
  payload = new Uint8Array(0),
  cty,
  iat,
  jti,
  cek,
  iv,
  cekKey,
  encryptedKey,
}) {
  if (typeof kid !== "string" || !kid) throw new TypeError("sealJweRequest needs the key's kid");
  if (typeof target !== "string" || !target.startsWith("/")) {
    throw new TypeError("htu is the request path (and query), starting with /");
  }
  const header = {
    alg: "RSA-OAEP-256",
    enc: "A256GCM",
    kid,
    htm: String(method).toUpperCase(),
    htu: target,
    iat: iat ?? Math.floor(Date.now() / 1000),
    jti: jti ?? b64urlEncode(randomBytes(16)),
  };
  if (cty !== undefined && cty !== null) header.cty = cty;
  const protectedHeader = JSON.stringify(header);
  const protectedB64 = b64urlEncode(encoder.encode(protectedHeader));

  const prepared = await prepareCek(async (raw) => b64urlEncode(await rsaOaepEncrypt(publicKey, raw)), {
    cek,
    cekKey,
    wrapped: encryptedKey,
  });
  const sealed = await aesGcmSeal(prepared.cekKey, toBytes(payload), {
    iv,
    aad: encoder.encode(protectedB64),
  });
  const jwe = [
    protectedB64,
    prepared.wrapped,
    b64urlEncode(sealed.iv),
    b64urlEncode(sealed.ciphertext),
    b64urlEncode(sealed.tag),
  ].join(".");
  return { jwe, jti: header.jti, cekKey: prepared.cekKey, encryptedKey: prepared.wrapped, protectedHeader };
}

/**
 * Open a format J response: a JWE compact with protected header
 * `{"alg":"dir","enc":"A256GCM","req","status","cty"}` under the request's CEK. When `req` is
 * given (always, in the client) the header's `req` must equal it: the answer belongs to our
 * request. Any failure throws HybridError `invalid_response`.
 * @returns {Promise<{header: object, plaintext: Uint8Array, status: number, contentType: string|null}>}
 */
export async function openJweResponse(key, jwe, { req } = {}) {
  const parts = typeof jwe === "string" ? jwe.trim().split(".") : [];
  if (parts.length !== 5) throw invalidResponse("the response is not a JWE compact serialization");
  const [protectedB64, encryptedKey, ivB64, ctB64, tagB64] = parts;
  let header;
  try {
    header = JSON.parse(utf8Decode(b64urlDecode(protectedB64)));
  } catch (err) {
    throw invalidResponse("the response JWE header is malformed", 0, err);
  }
  requireObject(header, "the response JWE header");
  if (header.alg !== "dir" || header.enc !== "A256GCM" || encryptedKey !== "") {
    throw invalidResponse("the response JWE is not alg dir / enc A256GCM");
  }
  if ("zip" in header || "crit" in header) throw invalidResponse("the response JWE uses zip or crit");
  const iv = decodeField(b64urlDecode, ivB64, "JWE iv");
  const ciphertext = decodeField(b64urlDecode, ctB64, "JWE ciphertext");
  const tag = decodeField(b64urlDecode, tagB64, "JWE tag");
  const plaintext = await aesGcmOpen(key, iv, ciphertext, tag, encoder.encode(protectedB64));
  // Only now is the header authenticated; check what it says.
  if (req !== undefined && header.req !== req) {
    throw invalidResponse("the response JWE answers another request (req is not our jti)");
  }
  if (!Number.isInteger(header.status) || header.status < 100 || header.status > 599) {
    throw invalidResponse("the response JWE has no integer status");
  }
  let contentType = typeof header.cty === "string" ? header.cty : null;
  if (contentType === "json") contentType = "application/json";
  return { header, plaintext, status: header.status, contentType };
}

// ---------------------------------------------------------------------------------------------
// Format H (EHBP): HPKE (RFC 9180) base mode and the frames of the Encrypted HTTP Body Protocol
// ---------------------------------------------------------------------------------------------
//
// One suite: DHKEM(X25519, HKDF-SHA256) 0x0020, HKDF-SHA256 0x0001, AES-256-GCM 0x0002. X25519,
// HMAC-SHA256 and AES-GCM are Web Crypto's; what is written here is only RFC 9180's composition
// of them (LabeledExtract / LabeledExpand, the key schedule, nonce = base_nonce XOR seq),
// checked against the RFC's known-answer vector (tests/js/ehbp.test.mjs).

const HPKE_KEM_ID = 0x0020;
const HPKE_KDF_ID = 0x0001;
const HPKE_AEAD_ID = 0x0002;
const HPKE_NPK = 32; // X25519 public key and enc
const HPKE_NK = 32; // AES-256 key
const HPKE_NN = 12; // AES-GCM nonce
const HPKE_NH = 32; // SHA-256
const i2osp2 = (n) => Uint8Array.of((n >> 8) & 0xff, n & 0xff);
const HPKE_VERSION = encoder.encode("HPKE-v1");
const KEM_SUITE_ID = concatAll([encoder.encode("KEM"), i2osp2(HPKE_KEM_ID)]);
const HPKE_SUITE_ID = concatAll([encoder.encode("HPKE"), i2osp2(HPKE_KEM_ID), i2osp2(HPKE_KDF_ID), i2osp2(HPKE_AEAD_ID)]);

/** EHBP's constants (docs/ehbp-notes.md). */
export const EHBP = Object.freeze({
  keysPath: "/.well-known/hpke-keys",
  keysMediaType: "application/ohttp-keys",
  encapsulatedKeyHeader: "Ehbp-Encapsulated-Key",
  responseNonceHeader: "Ehbp-Response-Nonce",
  keyConfigProblemType: "urn:ietf:params:ehbp:error:key-config",
  requestInfo: "ehbp request",
  exportLabel: "ehbp response",
  /** Plaintext bytes per request frame (as tinfoil-ehbp and our Python client seal). */
  frameSize: 64 * 1024,
  /** The largest response frame accepted (as the published clients). */
  maxResponseFrame: 64 * 1024 * 1024,
  /** Frames per body, both ways (the npm client's nonce arithmetic stops there too). */
  maxFrames: 2 ** 32,
});

function concatAll(parts) {
  const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** Lowercase hex of bytes. */
export function bytesToHex(bytes) {
  let out = "";
  for (const byte of toBytes(bytes)) out += byte.toString(16).padStart(2, "0");
  return out;
}

/** Bytes of a hex string (either case); a TypeError if it is not whole bytes of hex. */
export function hexToBytes(text) {
  if (typeof text !== "string" || text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) {
    throw new TypeError("not a hex string");
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

// RFC 5869 over Web Crypto's HMAC-SHA256. Extract with an empty salt uses HashLen zero bytes
// (RFC 5869 §2.2; Web Crypto refuses an empty HMAC key, and HMAC pads keys with zeros anyway).
async function hmacSha256(key, data) {
  const hmacKey = await subtle().importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle().sign("HMAC", hmacKey, data));
}

async function hkdfExtract(salt, ikm) {
  return hmacSha256(salt.length ? salt : new Uint8Array(HPKE_NH), ikm);
}

async function hkdfExpand(prk, info, length) {
  if (length > 255 * HPKE_NH) throw new RangeError("HKDF-Expand: too long");
  const blocks = [];
  let previous = new Uint8Array(0);
  for (let counter = 1; blocks.length * HPKE_NH < length; counter++) {
    previous = await hmacSha256(prk, concatAll([previous, info, Uint8Array.of(counter)]));
    blocks.push(previous);
  }
  return concatAll(blocks).slice(0, length);
}

// RFC 9180 §4: LabeledExtract / LabeledExpand under a suite id.
const labeledExtract = (suiteId, salt, label, ikm) =>
  hkdfExtract(salt, concatAll([HPKE_VERSION, suiteId, encoder.encode(label), ikm]));
const labeledExpand = (suiteId, prk, label, info, length) =>
  hkdfExpand(prk, concatAll([i2osp2(length), HPKE_VERSION, suiteId, encoder.encode(label), info]), length);

/** `base_nonce XOR seq`, seq big-endian in the low bytes (RFC 9180 §5.2; EHBP's response frames). */
function frameNonce(baseNonce, seq) {
  if (!Number.isInteger(seq) || seq < 0 || seq >= EHBP.maxFrames) throw new RangeError("too many frames in one body");
  const nonce = baseNonce.slice();
  for (let i = 0, rest = seq; i < 4; i++, rest = Math.floor(rest / 256)) nonce[nonce.length - 1 - i] ^= rest & 0xff;
  return nonce;
}

/**
 * An RFC 9458 `key_config` as `/.well-known/hpke-keys` serves it (one, bare, no length prefix):
 * key_id(1) | kem_id(2) = 0x0020 | public_key(32) | suites_len(2) | (kdf_id(2), aead_id(2))*.
 * The suite (HKDF-SHA256, AES-256-GCM) must be among the listed ones; trailing bytes are refused.
 * Throws HybridError `invalid_response` otherwise.
 * @returns {{keyId: number, publicKey: Uint8Array}}
 */
export function parseKeyConfig(data) {
  const bytes = toBytes(data);
  const bad = (why) => invalidResponse(`the server's HPKE key_config ${why}`);
  if (bytes.length < 1 + 2 + HPKE_NPK + 2) throw bad("is too short");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint16(1) !== HPKE_KEM_ID) throw bad("is not for DHKEM(X25519, HKDF-SHA256)");
  const suitesLength = view.getUint16(3 + HPKE_NPK);
  const start = 5 + HPKE_NPK;
  if (suitesLength === 0 || suitesLength % 4 !== 0 || start + suitesLength !== bytes.length) {
    throw bad("has a malformed list of suites");
  }
  let found = false;
  for (let at = start; at < bytes.length; at += 4) {
    if (view.getUint16(at) === HPKE_KDF_ID && view.getUint16(at + 2) === HPKE_AEAD_ID) found = true;
  }
  if (!found) throw bad("does not offer HKDF-SHA256 with AES-256-GCM");
  return { keyId: bytes[0], publicKey: bytes.slice(3, 3 + HPKE_NPK) };
}

/**
 * An HPKE sender context (RFC 9180 base mode, this suite): `enc` to send, `seal()` in order
 * (empty AAD by default), `export()`. Make it with `setupHpkeSender`.
 */
export class HpkeSenderContext {
  /** @private */
  constructor(enc, aeadKey, baseNonce, exporterSecret) {
    this.enc = enc;
    this._aeadKey = aeadKey;
    this._baseNonce = baseNonce;
    this._exporterSecret = exporterSecret;
    this._seq = 0;
  }

  /** The next sequence number `seal()` uses. */
  get seq() {
    return this._seq;
  }

  /** ContextS.Seal(aad, pt): ciphertext || 16-byte tag, under base_nonce XOR seq. */
  async seal(plaintext, aad) {
    const iv = frameNonce(this._baseNonce, this._seq);
    this._seq += 1; // never reused, even if encrypt() fails
    const params = { name: "AES-GCM", iv, tagLength: 128 };
    if (aad && toBytes(aad).length) params.additionalData = toBytes(aad);
    return new Uint8Array(await subtle().encrypt(params, this._aeadKey, toBytes(plaintext)));
  }

  /** Context.Export(exporter_context, L) = LabeledExpand(exporter_secret, "sec", ctx, L). */
  async export(exporterContext, length) {
    return labeledExpand(HPKE_SUITE_ID, this._exporterSecret, "sec", toBytes(exporterContext), length);
  }
}

/**
 * RFC 9180 SetupBaseS(pkR, info) for DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM.
 * `publicKey`: the recipient's 32 raw bytes. `ephemeralKeyPair` (a Web Crypto X25519 CryptoKeyPair)
 * fixes skE for known-answer tests; leave it out in real use (a fresh one is generated).
 * A public key whose shared secret is all zero (a low-order point) rejects with
 * HybridError `invalid_response`.
 * @returns {Promise<HpkeSenderContext>}
 */
export async function setupHpkeSender(publicKey, info, { ephemeralKeyPair } = {}) {
  const pkRm = toBytes(publicKey);
  if (pkRm.length !== HPKE_NPK) throw new TypeError("an X25519 public key is 32 bytes");
  const pkR = await subtle().importKey("raw", pkRm, { name: "X25519" }, true, []);
  const pair = ephemeralKeyPair ?? (await subtle().generateKey({ name: "X25519" }, false, ["deriveBits"]));
  let dh;
  try {
    dh = new Uint8Array(await subtle().deriveBits({ name: "X25519", public: pkR }, pair.privateKey, 256));
  } catch (err) {
    throw invalidResponse("the server's HPKE public key is not usable", 0, err);
  }
  const enc = new Uint8Array(await subtle().exportKey("raw", pair.publicKey));
  // Encap (§4.1): shared_secret = ExtractAndExpand(dh, enc || pkRm)
  const eaePrk = await labeledExtract(KEM_SUITE_ID, new Uint8Array(0), "eae_prk", dh);
  const sharedSecret = await labeledExpand(KEM_SUITE_ID, eaePrk, "shared_secret", concatAll([enc, pkRm]), HPKE_NH);
  // KeySchedule (§5.1), mode_base, empty psk and psk_id
  const empty = new Uint8Array(0);
  const pskIdHash = await labeledExtract(HPKE_SUITE_ID, empty, "psk_id_hash", empty);
  const infoHash = await labeledExtract(HPKE_SUITE_ID, empty, "info_hash", toBytes(info ?? empty));
  const context = concatAll([Uint8Array.of(0), pskIdHash, infoHash]);
  const secret = await labeledExtract(HPKE_SUITE_ID, sharedSecret, "secret", empty);
  const key = await labeledExpand(HPKE_SUITE_ID, secret, "key", context, HPKE_NK);
  const baseNonce = await labeledExpand(HPKE_SUITE_ID, secret, "base_nonce", context, HPKE_NN);
  const exporterSecret = await labeledExpand(HPKE_SUITE_ID, secret, "exp", context, HPKE_NH);
  const aeadKey = await subtle().importKey("raw", key, { name: "AES-GCM" }, false, ["encrypt"]);
  for (const bytes of [dh, eaePrk, sharedSecret, secret, key]) bytes.fill(0);
  return new HpkeSenderContext(enc, aeadKey, baseNonce, exporterSecret);
}

/**
 * EHBP's response key and base nonce (OHTTP, RFC 9458 §4.4): prk = HKDF-Extract(enc ||
 * response_nonce, secret); key = HKDF-Expand(prk, "key", 32); base_nonce = HKDF-Expand(prk,
 * "nonce", 12). Raw bytes, for known-answer tests; the client imports the key and zeroes them.
 * @returns {Promise<{key: Uint8Array, baseNonce: Uint8Array}>}
 */
export async function deriveEhbpResponseKeys(exportedSecret, enc, responseNonce) {
  const secret = toBytes(exportedSecret);
  const encBytes = toBytes(enc);
  const nonce = toBytes(responseNonce);
  if (secret.length !== 32 || encBytes.length !== HPKE_NPK || nonce.length !== 32) {
    throw new TypeError("the exported secret, enc and response nonce are 32 bytes each");
  }
  const prk = await hkdfExtract(concatAll([encBytes, nonce]), secret);
  const key = await hkdfExpand(prk, encoder.encode("key"), HPKE_NK);
  const baseNonce = await hkdfExpand(prk, encoder.encode("nonce"), HPKE_NN);
  prk.fill(0);
  return { key, baseNonce };
}

function frameOf(ciphertext) {
  const out = new Uint8Array(4 + ciphertext.length);
  new DataView(out.buffer).setUint32(0, ciphertext.length);
  out.set(ciphertext, 4);
  return out;
}

/**
 * Splits a byte stream into EHBP frames (`LEN(4, big-endian) || CIPHERTEXT`), holding at most one
 * partial frame; zero-length frames are dropped; a length over `maxFrame` throws before any of
 * the frame is buffered.
 */
class FrameReader {
  constructor(maxFrame) {
    this.maxFrame = maxFrame;
    this.chunks = [];
    this.buffered = 0;
    this.need = null; // ciphertext length of the frame being read
  }

  take(count) {
    const out = new Uint8Array(count);
    let at = 0;
    while (at < count) {
      const head = this.chunks[0];
      const n = Math.min(head.length, count - at);
      out.set(head.subarray(0, n), at);
      at += n;
      if (n === head.length) this.chunks.shift();
      else this.chunks[0] = head.subarray(n);
    }
    this.buffered -= count;
    return out;
  }

  /** @returns {Uint8Array[]} the ciphertexts of the frames completed by `data` */
  feed(data) {
    if (data.length) {
      this.chunks.push(data);
      this.buffered += data.length;
    }
    const frames = [];
    for (;;) {
      if (this.need === null) {
        if (this.buffered < 4) return frames;
        const prefix = this.take(4);
        const length = new DataView(prefix.buffer).getUint32(0);
        if (length === 0) continue;
        if (length > this.maxFrame) throw invalidResponse("an EHBP frame longer than allowed");
        this.need = length;
      }
      if (this.buffered < this.need) return frames;
      frames.push(this.take(this.need));
      this.need = null;
    }
  }

  get partial() {
    return this.buffered > 0 || this.need !== null;
  }
}

/**
 * Opens a format H response body as it arrives: `feed(bytes)` resolves to the plaintexts of the
 * frames completed, each authenticated (AES-256-GCM, base_nonce XOR i), in order; `finish()`
 * throws if the body stopped inside a frame. Any failure is a HybridError `invalid_response`, and
 * every later call throws it again. Make one with `EhbpRequestSealer.responseOpener`.
 */
export class EhbpResponseOpener {
  /** @private */
  constructor(aeadKey, baseNonce, { maxFrame = EHBP.maxResponseFrame } = {}) {
    this._aeadKey = aeadKey;
    this._baseNonce = baseNonce;
    this._reader = new FrameReader(maxFrame);
    this._seq = 0;
    this._failure = null;
    /** Ciphertext lengths of the frames opened so far. */
    this.frames = [];
  }

  /** An opener from the export of the request's context, its `enc` and the response nonce. */
  static async create(exportedSecret, enc, responseNonce, options) {
    const { key, baseNonce } = await deriveEhbpResponseKeys(exportedSecret, enc, responseNonce);
    const aeadKey = await subtle().importKey("raw", key, { name: "AES-GCM" }, false, ["decrypt"]);
    key.fill(0);
    return new EhbpResponseOpener(aeadKey, baseNonce, options);
  }

  /**
   * The plaintexts of the frames `data` completes. Frames that authenticated before a failing one
   * are still returned; the failure is thrown by the next call (feed or finish).
   * @returns {Promise<Uint8Array[]>}
   */
  async feed(data) {
    if (this._failure) throw this._failure;
    const plaintexts = [];
    try {
      for (const ciphertext of this._reader.feed(toBytes(data))) {
        const iv = frameNonce(this._baseNonce, this._seq);
        let plaintext;
        try {
          plaintext = await subtle().decrypt({ name: "AES-GCM", iv, tagLength: 128 }, this._aeadKey, ciphertext);
        } catch (err) {
          throw invalidResponse(`EHBP response frame ${this._seq} failed authentication`, 0, err);
        }
        this._seq += 1;
        this.frames.push(ciphertext.length);
        plaintexts.push(new Uint8Array(plaintext));
      }
      return plaintexts;
    } catch (err) {
      this._failure = err instanceof HybridError ? err : invalidResponse("EHBP response framing failed", 0, err);
      if (plaintexts.length) return plaintexts;
      throw this._failure;
    }
  }

  /** End of the body: throws HybridError `invalid_response` if it stopped inside a frame. */
  finish() {
    if (this._failure) throw this._failure;
    if (this._reader.partial) {
      this._failure = invalidResponse("the EHBP response ends inside a frame");
      throw this._failure;
    }
  }
}

/**
 * Seals a request body to the server's HPKE key (format H, the client's half). `headerValue` is
 * the `Ehbp-Encapsulated-Key` to send (lowercase hex of enc). `seal(part)` resolves to the frames
 * of a part of the body, one per `EHBP.frameSize` bytes (an empty part gives no frame).
 *
 *     const sealer = await EhbpRequestSealer.create(keyConfig.publicKey);
 *     const wire = await sealer.seal(body);
 *     const opener = await sealer.responseOpener(res.headers.get("Ehbp-Response-Nonce"));
 */
export class EhbpRequestSealer {
  /** @private */
  constructor(context) {
    this._context = context;
    this.enc = context.enc;
    this.headerValue = bytesToHex(context.enc);
    /** Ciphertext lengths of the frames sealed so far. */
    this.frames = [];
  }

  /** `ephemeralKeyPair`: a fixed X25519 CryptoKeyPair, for known-answer tests only. */
  static async create(publicKey, { ephemeralKeyPair } = {}) {
    return new EhbpRequestSealer(await setupHpkeSender(publicKey, encoder.encode(EHBP.requestInfo), { ephemeralKeyPair }));
  }

  /** @returns {Promise<Uint8Array>} framed ciphertext of `plaintext` */
  async seal(plaintext) {
    const bytes = toBytes(plaintext);
    const frames = [];
    for (let start = 0; start < bytes.length; start += EHBP.frameSize) {
      const ciphertext = await this._context.seal(bytes.subarray(start, start + EHBP.frameSize));
      this.frames.push(ciphertext.length);
      frames.push(frameOf(ciphertext));
    }
    return frames.length === 1 ? frames[0] : concatAll(frames);
  }

  /** The 32-byte "ehbp response" export of the request's context. */
  exportedSecret() {
    return this._context.export(encoder.encode(EHBP.exportLabel), 32);
  }

  /**
   * The opener of the answer, given its `Ehbp-Response-Nonce` value (exactly 64 hex digits;
   * HybridError `invalid_response` otherwise).
   * @returns {Promise<EhbpResponseOpener>}
   */
  async responseOpener(nonceHeader, options) {
    const value = typeof nonceHeader === "string" ? nonceHeader.replace(/^[ \t]+|[ \t]+$/g, "") : "";
    if (!/^[0-9a-fA-F]{64}$/.test(value)) throw invalidResponse("the Ehbp-Response-Nonce is not 64 hex digits");
    const secret = await this.exportedSecret();
    try {
      return await EhbpResponseOpener.create(secret, this.enc, hexToBytes(value), options);
    } finally {
      secret.fill(0);
    }
  }
}

/**
 * A ReadableStream of the plaintext of a format H response `body` (a ReadableStream of bytes, as
 * fetch gives), frame by frame as they arrive and authenticate. It errors with HybridError
 * `invalid_response` on a frame that does not open or a body that ends inside a frame.
 * `onEnd(error|null)` is called once when the body ended, failed or was cancelled.
 */
export function openEhbpResponseStream(body, opener, { onEnd } = {}) {
  const reader = body.getReader();
  let ended = false;
  const end = (error) => {
    if (ended) return;
    ended = true;
    if (onEnd) onEnd(error);
  };
  return new ReadableStream(
    {
      async pull(controller) {
        try {
          for (;;) {
            const { done, value } = await reader.read();
            if (done) {
              opener.finish();
              controller.close();
              end(null);
              return;
            }
            const plaintexts = await opener.feed(value);
            for (const plaintext of plaintexts) if (plaintext.length) controller.enqueue(plaintext);
            if (plaintexts.length) return;
          }
        } catch (err) {
          const error = err instanceof HybridError ? err : invalidResponse("the EHBP response could not be read", 0, err);
          controller.error(error);
          reader.cancel(error).catch(() => {});
          end(error);
        }
      },
      cancel(reason) {
        end(null);
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

const FORMATS = ["jwe", "session", "envelope", "ehbp"];
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);
const DEVICE_ID_RE = /^[\x21-\x7e]{1,128}$/;
const SESSION_EXPIRY_MARGIN_MS = 5000;

const isJsonType = (type) => /^application\/json\s*(;|$)/i.test(type || "");

/** Turn a fetch `init.body` into bytes, and its default content type. */
async function readBody(body) {
  if (body === undefined || body === null) return { bytes: null, type: null };
  if (typeof body === "string") return { bytes: encoder.encode(body), type: null };
  if (body instanceof ArrayBuffer || ArrayBuffer.isView(body)) return { bytes: toBytes(body), type: null };
  if (typeof URLSearchParams !== "undefined" && body instanceof URLSearchParams) {
    return { bytes: encoder.encode(body.toString()), type: "application/x-www-form-urlencoded;charset=UTF-8" };
  }
  if (typeof Blob !== "undefined" && body instanceof Blob) {
    return { bytes: new Uint8Array(await body.arrayBuffer()), type: body.type || null };
  }
  if (typeof FormData !== "undefined" && body instanceof FormData) {
    throw new TypeError("flask-hybrid does not encrypt multipart bodies (FormData)");
  }
  const proto = Object.getPrototypeOf(body);
  if (Array.isArray(body) || proto === Object.prototype || proto === null) {
    return { bytes: encoder.encode(JSON.stringify(body)), type: "application/json" };
  }
  throw new TypeError("unsupported body: use a string, bytes, a Blob or a plain object");
}

/** Seconds of a Retry-After value (delta-seconds or HTTP date), or null. */
function parseRetryAfter(value) {
  if (!value) return null;
  if (/^\s*\d+\s*$/.test(value)) return Number(value);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

const headersToObject = (headers) => Object.fromEntries(headers.entries());

function tryParseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * `{code, message}` of a flask-hybrid refusal, or null: a JSON body `{"error": <code>}` of the
 * error table, answered with that code's status (a 200 whose body reads `{"error":
 * "unknown_key"}` is an answer, not a refusal).
 */
function parseRefusal(res, text) {
  if (!isJsonType(res.headers.get("content-type"))) return null;
  const body = tryParseJson(text);
  if (!body || typeof body !== "object" || typeof body.error !== "string") return null;
  if (!SERVER_ERROR_CODES.includes(body.error) || SERVER_ERROR_STATUS[body.error] !== res.status) return null;
  return { code: body.error, message: typeof body.message === "string" ? body.message : body.error };
}

/** A standard Response carrying the decrypted body, the server's status and headers. */
function buildResponse(res, status, body, contentType) {
  const headers = new Headers(res.headers);
  for (const name of [
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "content-type",
    "x-plaintext-content-type",
  ]) {
    headers.delete(name);
  }
  if (contentType) headers.set("content-type", contentType);
  const nullBody = NULL_BODY_STATUSES.has(status) || body === null;
  return new Response(nullBody ? null : body, { status, statusText: res.statusText, headers });
}

// -- Format H helpers ---------------------------------------------------------------------------

/** Bytes per read of a Blob body (format H seals it as it reads). */
const BLOB_SLICE = 1024 * 1024;
/** Wire bytes kept for display (ExchangeInfo.ehbp.requestHead / responseHead). */
const WIRE_HEAD_BYTES = 512;
/** A plaintext request body at most this long is kept as text in ExchangeInfo (format H). */
const KEPT_PLAINTEXT = 1024 * 1024;

/**
 * A format H body as a source of chunks: `{chunks(): AsyncIterator<Uint8Array>, replayable,
 * type, bytes}` (bytes only for an in-memory body), or null for no body. Strings are UTF-8, plain
 * objects and arrays JSON; Blobs are read slice by slice; a ReadableStream is read once (so it
 * cannot be sent again after a 422).
 */
async function ehbpBodySource(body) {
  if (body === undefined || body === null) return null;
  const isStream = typeof ReadableStream !== "undefined" && body instanceof ReadableStream;
  if (isStream) {
    const reader = body.getReader();
    let used = false;
    return {
      replayable: false,
      type: "application/octet-stream",
      bytes: null,
      async *chunks() {
        if (used) throw new TypeError("a ReadableStream body can be read once");
        used = true;
        for (;;) {
          const { done, value } = await reader.read();
          if (done) return;
          if (!(value instanceof Uint8Array)) throw new TypeError("a ReadableStream body yields Uint8Array chunks");
          yield value;
        }
      },
    };
  }
  if (typeof Blob !== "undefined" && body instanceof Blob) {
    return {
      replayable: true,
      type: body.type || "application/octet-stream",
      bytes: null,
      async *chunks() {
        for (let start = 0; start < body.size; start += BLOB_SLICE) {
          yield new Uint8Array(await body.slice(start, start + BLOB_SLICE).arrayBuffer());
        }
      },
    };
  }
  const read = await readBody(body);
  const binary = body instanceof ArrayBuffer || ArrayBuffer.isView(body);
  return {
    replayable: true,
    type: read.type ?? (binary ? "application/octet-stream" : "application/json"),
    bytes: read.bytes,
    async *chunks() {
      if (read.bytes.length) yield read.bytes;
    },
  };
}

/** The chunks from the first non-empty one on, or null when the source yields no byte at all. */
async function firstNonEmpty(iterator) {
  for (;;) {
    const { done, value } = await iterator.next();
    if (done) return null;
    if (value.length) {
      let first = value;
      return {
        async next() {
          if (first) {
            const out = { done: false, value: first };
            first = null;
            return out;
          }
          return iterator.next();
        },
      };
    }
  }
}

/** Frames of EHBP.frameSize plaintext bytes, sealed as the chunks are read (one frame held). */
async function* sealedFrames(sealer, chunks) {
  let pending = [];
  let pendingBytes = 0;
  const flush = async (count) => {
    const plain = concatAll(pending);
    pending = plain.length > count ? [plain.subarray(count)] : [];
    pendingBytes = plain.length - count;
    return sealer.seal(plain.subarray(0, count));
  };
  for (;;) {
    const { done, value } = await chunks.next();
    if (done) break;
    pending.push(value);
    pendingBytes += value.length;
    if (pendingBytes >= EHBP.frameSize) {
      yield await flush(pendingBytes - (pendingBytes % EHBP.frameSize));
    }
  }
  if (pendingBytes) yield await flush(pendingBytes);
}

/** Whether a response is EHBP's 422 key-configuration problem. */
function isKeyConfigProblem(res, text) {
  if (res.status !== 422) return false;
  const mediaType = (res.headers.get("content-type") ?? "").split(";", 1)[0].trim().toLowerCase();
  if (mediaType !== "application/problem+json") return false;
  const problem = tryParseJson(text);
  return Boolean(problem && typeof problem === "object" && problem.type === EHBP.keyConfigProblemType);
}

/** Whether this looks like a browser, where streamed uploads need HTTP/2 or HTTP/3. */
const inBrowser = () => typeof document !== "undefined";

/**
 * What travelled on the wire in one exchange (`client.lastExchange`, `onExchange`).
 * @typedef {object} ExchangeInfo
 * @property {"request"|"handshake"|"close"} kind
 * @property {"jwe"|"session"|"envelope"|"ehbp"} format
 * @property {string} method
 * @property {string} url
 * @property {Object<string, string>} requestHeaders headers as sent (lower-case names)
 * @property {string|null} requestBody the body as sent (JWE compact or JSON envelope text)
 * @property {string|null} requestPlaintext the request body before encryption
 * @property {number} status
 * @property {Object<string, string>} responseHeaders
 * @property {string} responseBody the raw response body text as received
 * @property {boolean} sealed the response was sealed and opened
 * @property {"valid"|"absent"|"not-needed"} signature the request-bound RFC 9421 signature:
 *   "valid" (verified and bound to this request), "absent" (none, and none was needed: a plain
 *   request's answer), "not-needed" (none, on a sealed answer: the AEAD authenticates it)
 * @property {string|null} plaintext the decrypted response body, when sealed
 * @property {{code: string, message: string}|null} error what the exchange ended with
 */

/**
 * A client of a flask-hybrid API. Make one with `HybridClient.connect(options)`.
 *
 * Every call of `fetch()` encrypts the request body (a fresh CEK each time unless `reuseKey`),
 * sends its RFC 9530 `Content-Digest`, asks for a sealed answer, checks it, and resolves to a
 * standard Response with the server's status and headers and the decrypted body. An answer that
 * is not sealed (a refusal, a bodiless or plain answer, the handshake's) counts only with the
 * server's RFC 9421 signature bound to this request (PROTOCOL.md). Protocol failures reject with
 * HybridError.
 *
 * Cross-origin APIs work as they are: the client reads only headers that flask-hybrid lists in
 * `Access-Control-Expose-Headers` (Content-Digest, Signature-Input, Signature, ...), and sends
 * Content-Digest and its key headers, which the API's CORS configuration must allow.
 */
export class HybridClient {
  /**
   * @param {object} options see `connect`
   * @private use `HybridClient.connect`
   */
  constructor(options = {}) {
    const { format } = options;
    if (!FORMATS.includes(format)) {
      throw new TypeError(`format must be one of ${FORMATS.join(", ")}`);
    }
    this.format = format;
    this.baseUrl = String(options.baseUrl ?? "").replace(/\/+$/, "");
    this.prefix = "/" + String(options.prefix ?? "/hybrid").replace(/^\/+|\/+$/g, "");
    this.deviceId = options.deviceId ?? `web-${b64urlEncode(randomBytes(12))}`;
    if (!DEVICE_ID_RE.test(this.deviceId)) {
      throw new TypeError("deviceId is 1..128 printable ASCII characters without spaces");
    }
    this.jsencrypt = options.jsencrypt ?? null;
    this.reuseKey = Boolean(options.reuseKey);
    this.pinnedKid = options.pinnedKid ?? null;
    this.pinnedSigningKid = options.pinnedSigningKid !== undefined ? options.pinnedSigningKid : this.pinnedKid;
    this.encryptResponse = options.encryptResponse ?? true;
    const streamUploads = options.streamUploads ?? "auto";
    if (streamUploads !== "auto" && streamUploads !== true && streamUploads !== false) {
      throw new TypeError('streamUploads is "auto", true or false');
    }
    this.streamUploads = streamUploads;
    this.onExchange = options.onExchange ?? null;
    /** @type {ExchangeInfo|null} what travelled on the wire in the last exchange */
    this.lastExchange = null;

    const fetchImpl = options.fetchImpl ?? globalThis.fetch;
    if (typeof fetchImpl !== "function") throw new TypeError("no fetch implementation");
    // Called as a plain function: a browser's fetch must not be called as a method of this.
    this._fetch = options.fetchImpl
      ? (url, init) => fetchImpl(url, init)
      : (url, init) => fetchImpl.call(globalThis, url, init);
    this._beforeSend = options.beforeSend ?? null;

    /** kid -> {kid, jwk, enc, sig, pem?, encryptKey?, verifyKey?}; kid = RFC 7638 thumbprint */
    this._keys = new Map();
    this._currentKid = null;
    this._jwksLoaded = false;
    this._envelopeKey = null; // format E: {kid, pem, jwk}
    this._session = null; // format S: {token, sessionId, publicKey, expiresAt}
    this._handshaking = null; // the handshake in flight, if any
    this._reuse = null; // reuseKey: {scope, cekKey, wrapped}
    this._closed = false;
    this._hpke = null; // format H: {keyId, publicKey, kid} of /.well-known/hpke-keys
    this._keysProtocol = null; // format H: the HTTP version that served the keys, when known
    this._streamUploadRefused = false; // format H: fetch refused a streamed upload once
  }

  /**
   * Fetch the server's keys (and, for "session", make the handshake) and return a ready client.
   *
   * @param {object} options
   * @param {"jwe"|"session"|"envelope"|"ehbp"} options.format the wire format (PROTOCOL.md J, S, E, H)
   * @param {string} [options.baseUrl] origin (and mount path) of the API, "" = same origin
   * @param {string} [options.prefix] the blueprint's URL prefix, default "/hybrid"
   * @param {string} [options.deviceId] format S device id (default: random per client)
   * @param {object} [options.jsencrypt] a JSEncrypt instance: format E then wraps with PKCS#1 v1.5
   * @param {boolean} [options.reuseKey] S and J: one CEK (and wrapped key) for the session
   * @param {string} [options.pinnedKid] the identity key must have this kid (RFC 7638 thumbprint);
   *   format H: the HPKE public key, as hex
   * @param {"auto"|boolean} [options.streamUploads] format H: send a ReadableStream body as it is
   *   sealed (duplex "half"); "auto" (default) does unless a browser got the keys over HTTP/1.x
   * @param {string|null} [options.pinnedSigningKid] response signatures must be made by the signing
   *   key with this kid (default: pinnedKid; null: any signing key of jwks.json)
   * @param {boolean} [options.encryptResponse] format E: ask for a sealed response (default true)
   * @param {Function} [options.fetchImpl] fetch to use (default globalThis.fetch)
   * @param {Function} [options.onExchange] called with each ExchangeInfo
   * @param {Function} [options.beforeSend] testing hook: may change `{url, method, headers, body}` before it is
   *   sent; a changed body gets a new Content-Digest unless the hook changed that header too
   * @returns {Promise<HybridClient>}
   */
  static async connect(options) {
    const client = new HybridClient(options);
    if (client.format === "ehbp") {
      await client._loadKeyConfig();
    } else if (client.format === "envelope") {
      await client._loadPublicKey();
    } else {
      await client._loadJwks();
      if (client.format === "session") await client._handshake();
    }
    return client;
  }

  /** The format S session id (null without a session). */
  get sessionId() {
    return this._session ? this._session.sessionId : null;
  }

  /** The kid of the identity key requests are encrypted to (formats J and E); format H: the HPKE public key (hex). */
  get kid() {
    if (this.format === "ehbp") return this._hpke ? this._hpke.kid : null;
    if (this.format === "envelope") return this._envelopeKey ? this._envelopeKey.kid : null;
    return this.pinnedKid ?? this._currentKid;
  }

  /**
   * Send a request through the encryption layer. `input` is a path ("/api/orders?x=1", joined to
   * baseUrl) or an absolute URL; `init` is the usual fetch init. The body (string, bytes, Blob,
   * URLSearchParams or a plain object, which is sent as JSON) is encrypted; its content type is
   * `init.headers` Content-Type, default application/json. A request without a body asks for a
   * sealed answer through a header (J, S); format E has no such form and sends it in the clear.
   * A HEAD's answer carries no body to open or to check a digest against: it is returned as it
   * came, and never retried.
   *
   * Retries once, transparently, after `unknown_key` (keys refetched) and, for format S, after
   * `invalid_session` (new handshake) — only when that refusal carries a valid signature bound to
   * this request, which proves that the app never ran it. An answer that should be signed and is
   * not (an unsigned or replayed refusal, a 204 in place of a sealed answer) rejects with
   * `invalid_signature` and is never retried: the request may have run.
   * @returns {Promise<Response>}
   */
  async fetch(input, init = {}) {
    if (this._closed) throw new HybridError("invalid_session", "this client was closed");
    const url = this._resolve(input);
    const method = String(init.method ?? "GET").toUpperCase();
    if (this.format === "ehbp") return this._fetchEhbp(url, method, init);
    const userHeaders = new Headers(init.headers ?? undefined);
    const read = await readBody(init.body);
    const body = read.bytes && read.bytes.length > 0 ? read.bytes : null;
    const contentType = userHeaders.get("content-type") ?? read.type ?? "application/json";
    if (body && this.format !== "jwe" && !isJsonType(contentType)) {
      throw new TypeError(`format ${this.format} carries JSON only; use format "jwe" for ${contentType}`);
    }
    userHeaders.delete("content-type");
    userHeaders.delete("content-length");
    const request = { url, method, userHeaders, body, contentType, init };

    let keysRefetched = false;
    let sessionRenewed = false;
    for (;;) {
      try {
        return await this._attempt(request);
      } catch (err) {
        if (!verifiedRefusals.has(err)) throw err;
        if (err.code === "unknown_key" && !keysRefetched) {
          keysRefetched = true;
          await this._refreshKeys();
          continue;
        }
        if (err.code === "invalid_session" && this.format === "session" && !sessionRenewed) {
          sessionRenewed = true;
          // Renew only the session this request used: a concurrent request may have done it.
          if (!this._session || this._session === request.session) await this._handshake();
          continue;
        }
        throw err;
      }
    }
  }

  /**
   * End the client. Format S: `DELETE {prefix}/session` (the token is refused after) and
   * forget the session; later `fetch()` calls reject with `invalid_session`. The session is
   * forgotten locally in any case; the call rejects with `invalid_signature` when the answer is
   * not signed for this request (nothing then says the server ended the session). Formats J and
   * E hold no session: only a reused CEK is forgotten, and the client stays usable.
   */
  async close() {
    this._reuse = null;
    if (this.format !== "session" || this._closed) return;
    this._closed = true;
    const session = this._session;
    this._session = null;
    if (!session) return;
    const headers = new Headers({
      Authorization: `Bearer ${session.token}`,
      "X-Device-Id": this.deviceId,
    });
    const wire = await this._send("close", this._hybridUrl("/session"), "DELETE", headers, null, {}, { digest: true });
    const exchange = this._exchange("close", wire, { sealed: false, signature: "absent" });
    try {
      exchange.signature = await this._verifyBound(wire);
      if (wire.res.ok || wire.res.status === 401) return; // 401: the session was already gone
      const refusal = parseRefusal(wire.res, wire.text);
      throw refusal
        ? this._refusalError(refusal, wire.res, { verified: wire.refusalCode === refusal.code })
        : invalidResponse(`DELETE ${this.prefix}/session answered ${wire.res.status}`, wire.res.status);
    } catch (err) {
      exchange.error = { code: err.code ?? "error", message: err.message };
      throw err;
    } finally {
      this._record(exchange);
    }
  }

  // -- URLs -----------------------------------------------------------------------------------

  _resolve(input) {
    const raw = input instanceof URL ? input.href : String(input);
    const joined = /^[a-z][a-z0-9+.-]*:/i.test(raw) ? raw : this.baseUrl + (raw.startsWith("/") ? raw : "/" + raw);
    const base = globalThis.location ? globalThis.location.href : undefined;
    let url;
    try {
      url = new URL(joined, base);
    } catch (err) {
      throw new TypeError(`cannot resolve ${joined}: give an absolute baseUrl outside a browser`, { cause: err });
    }
    url.hash = "";
    return url;
  }

  _hybridUrl(path) {
    return this._resolve(this.prefix + path);
  }

  /** `htu`: the request target exactly as fetch sends it (path and query, no `?` if no query). */
  static _target(url) {
    const copy = new URL(url.href);
    copy.username = "";
    copy.password = "";
    return copy.href.slice(copy.origin.length);
  }

  // -- Keys -----------------------------------------------------------------------------------

  async _getJson(path) {
    const wire = await this._send("keys", this._hybridUrl(path), "GET", new Headers({ Accept: "application/json" }), null, {});
    if (!wire.res.ok) {
      const refusal = parseRefusal(wire.res, wire.text);
      if (refusal) throw this._refusalError(refusal, wire.res, { verified: false });
      throw invalidResponse(`GET ${this.prefix}${path} answered ${wire.res.status}`, wire.res.status);
    }
    const data = tryParseJson(wire.text);
    if (!data || typeof data !== "object") throw invalidResponse(`GET ${this.prefix}${path} is not JSON`);
    return data;
  }

  /** Validate a public JWK and make a key record keyed by its RFC 7638 thumbprint. */
  async _keyRecord(jwk, advertisedKid, pem) {
    if (!jwk || jwk.kty !== "RSA" || typeof jwk.n !== "string" || typeof jwk.e !== "string") return null;
    let kid;
    try {
      if (stripLeadingZeros(b64urlDecode(jwk.n)).length < MIN_MODULUS_BYTES) return null;
      kid = await jwkThumbprint(jwk);
    } catch {
      return null;
    }
    // kid = RFC 7638 thumbprint (PROTOCOL.md): a key advertised under another kid is not used.
    if (advertisedKid !== undefined && advertisedKid !== kid) return null;
    const record = this._keys.get(kid) ?? { kid, jwk: { kty: "RSA", n: jwk.n, e: jwk.e }, enc: false, sig: false };
    if (pem) record.pem = pem;
    this._keys.set(kid, record);
    return record;
  }

  /**
   * Load jwks.json. An entry is an identity (encryption) key with `"use": "enc"` or no `use`, and
   * a signing key with `"use": "sig"` (and `alg` RS256, if it says one) — or any entry when no
   * entry says `use` (servers whose identity keys also sign). A key that does both may be listed
   * twice, once per use. The first identity key is the current one.
   */
  async _loadJwks() {
    const data = await this._getJson("/jwks.json");
    if (!Array.isArray(data.keys)) throw invalidResponse("jwks.json has no keys array");
    const anyUse = data.keys.some((jwk) => jwk && typeof jwk === "object" && jwk.use !== undefined);
    const listed = new Set();
    let current = null;
    for (const jwk of data.keys) {
      const record = await this._keyRecord(jwk, jwk && jwk.kid);
      if (!record) continue;
      if (!listed.has(record.kid)) {
        listed.add(record.kid);
        record.enc = false;
        record.sig = false;
      }
      if (jwk.use === undefined || jwk.use === "enc") record.enc = true;
      if (!anyUse || (jwk.use === "sig" && (jwk.alg === undefined || jwk.alg === "RS256"))) record.sig = true;
      if (record.enc && !current) current = record; // the current key is listed first
    }
    for (const record of this._keys.values()) {
      if (!listed.has(record.kid)) record.sig = false; // no longer published as a signing key
    }
    if (!current) throw invalidResponse("jwks.json lists no usable RSA key (>= 2048 bits, kid = thumbprint)");
    this._currentKid = current.kid;
    this._jwksLoaded = true;
    if (this.pinnedKid && !this._keys.get(this.pinnedKid)?.enc) {
      throw new HybridError("unknown_key", `the server has no identity key with the pinned kid ${this.pinnedKid}`);
    }
  }

  async _loadPublicKey() {
    const data = await this._getJson("/public-key");
    if (typeof data.publicKey !== "string") throw invalidResponse("public-key has no publicKey PEM");
    let jwk;
    try {
      jwk = await pemToJwk(data.publicKey);
    } catch (err) {
      throw invalidResponse("public-key is not a PEM RSA public key", 0, err);
    }
    let record = await this._keyRecord(jwk, data.kid, data.publicKey);
    if (!record) throw invalidResponse("public-key is not usable (>= 2048 bits, kid = thumbprint)");
    record.enc = true;
    if (this.pinnedKid && record.kid !== this.pinnedKid) {
      // Not the current key: the pinned one may still be loaded on the server (jwks.json).
      if (!this._jwksLoaded) await this._loadJwks();
      record = this._keys.get(this.pinnedKid);
      if (!record?.enc) throw new HybridError("unknown_key", `no identity key with the pinned kid ${this.pinnedKid}`);
      record.pem = record.pem ?? (await jwkToPem(record.jwk));
    }
    this._envelopeKey = record;
    if (this.jsencrypt) this.jsencrypt.setPublicKey(record.pem);
  }

  async _refreshKeys() {
    if (this.format === "ehbp") return this._loadKeyConfig();
    this._keys = new Map();
    this._jwksLoaded = false;
    this._reuse = null;
    if (this.format === "envelope") await this._loadPublicKey();
    else await this._loadJwks();
  }

  /** The identity key format J encrypts to: the pinned one, else the current one. */
  _identityKey() {
    const kid = this.pinnedKid ?? this._currentKid;
    const record = this._keys.get(kid);
    if (!record?.enc) throw new HybridError("unknown_key", `no identity key with kid ${kid}`);
    return record;
  }

  async _encryptKey(record) {
    record.encryptKey = record.encryptKey ?? (await importRsaPublicKey(record.jwk, "encrypt"));
    return record.encryptKey;
  }

  /**
   * The verify key of a signing key of the server (jwks.json), or null: the pinned signing kid
   * only, if there is one; jwks.json is (re)fetched once when the kid is not known to sign.
   */
  async _signingKey(kid) {
    if (typeof kid !== "string" || !kid) return null;
    if (this.pinnedSigningKid && kid !== this.pinnedSigningKid) return null;
    let record = this._keys.get(kid);
    if (!record?.sig) {
      try {
        await this._loadJwks();
      } catch {
        return null;
      }
      record = this._keys.get(kid);
      if (!record?.sig) return null;
    }
    record.verifyKey = record.verifyKey ?? (await importRsaPublicKey(record.jwk, "verify"));
    return record.verifyKey;
  }

  /**
   * Check that an answer carries a valid signature bound to the request as sent (`wire`): returns
   * "valid", or throws `invalid_signature` with the answer's status.
   */
  async _verifyBound(wire, { answerKey = null } = {}) {
    const request = { method: wire.method, headers: wire.headers };
    const response = { status: wire.res.status, headers: wire.res.headers, body: wire.bytes };
    // An HMAC counts only under this request's own answer key (format S); others are signing keys.
    const keyFor = (keyid, alg) =>
      alg === ANSWER_ALG ? (keyid === ANSWER_KEYID ? answerKey : null) : this._signingKey(keyid);
    try {
      await verifyResponseSignature({ request, response, keyFor });
      // Verified: a covered X-Hybrid-Refusal says the server itself refused (PROTOCOL.md); an
      // app's answer that only looks like a refusal never carries it.
      const { components } = unverifiedResponseSignature({ request, response });
      wire.refusalCode = components.includes(`"${REFUSAL_HEADER}"`) ? wire.res.headers.get(REFUSAL_HEADER) : null;
    } catch (err) {
      if (err instanceof HybridError) {
        err.status = wire.res.status;
        throw err;
      }
      throw new HybridError("invalid_signature", "the answer's signature could not be checked", {
        status: wire.res.status,
        cause: err,
      });
    }
    return "valid";
  }

  // -- Format H (EHBP) --------------------------------------------------------------------------

  /**
   * Load the server's key_config from `/.well-known/hpke-keys` at the origin's root (EHBP clients
   * drop any path of the base URL). Its media type must be application/ohttp-keys.
   */
  async _loadKeyConfig() {
    const url = new URL(EHBP.keysPath, this._resolve("/").origin);
    const res = await this._fetch(url.href, { method: "GET" });
    const bytes = new Uint8Array(await res.arrayBuffer());
    const mediaType = (res.headers.get("content-type") ?? "").split(";", 1)[0].trim().toLowerCase();
    if (res.status !== 200 || mediaType !== EHBP.keysMediaType) {
      throw invalidResponse(`GET ${EHBP.keysPath} answered ${res.status} ${mediaType || "without a type"}`, res.status);
    }
    const config = parseKeyConfig(bytes);
    const kid = bytesToHex(config.publicKey);
    if (this.pinnedKid && this.pinnedKid.toLowerCase() !== kid) {
      throw new HybridError("unknown_key", `the server's HPKE key is not the pinned ${this.pinnedKid}`);
    }
    this._hpke = { ...config, kid };
    // Resource Timing tells which HTTP version served the keys (same origin, or Timing-Allow-Origin).
    const entries = globalThis.performance?.getEntriesByName?.(url.href) ?? [];
    this._keysProtocol = entries.length ? entries[entries.length - 1].nextHopProtocol || null : null;
  }

  /** Whether to try sending a ReadableStream body as it is sealed (see ConnectOptions.streamUploads). */
  _mayStreamUpload() {
    if (this.streamUploads === false || this._streamUploadRefused) return false;
    if (this.streamUploads === true) return true;
    // "auto": browsers stream uploads only over HTTP/2 and HTTP/3; Node's fetch over any.
    return !(inBrowser() && /^http\/1/i.test(this._keysProtocol ?? ""));
  }

  /** Format H: one request, resent once after the 422 key-config problem when the body allows. */
  async _fetchEhbp(url, method, init) {
    const userHeaders = new Headers(init.headers ?? undefined);
    for (const name of ["content-length", "transfer-encoding", EHBP.encapsulatedKeyHeader, EHBP.responseNonceHeader]) {
      userHeaders.delete(name);
    }
    const source = await ehbpBodySource(init.body);
    if (source && !userHeaders.has("content-type")) userHeaders.set("content-type", source.type);
    const { method: _m, headers: _h, body: _b, duplex: _d, ...rest } = init;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this._attemptEhbp({ url, method, userHeaders, source, rest });
      } catch (err) {
        if (!(err instanceof HybridError) || err.code !== "key_config_mismatch" || attempt > 1) throw err;
        await this._loadKeyConfig(); // EHBP §5.4.3: refetch the keys, and resend what can be
        if (!source.replayable) throw err;
      }
    }
  }

  async _attemptEhbp({ url, method, userHeaders, source, rest }) {
    const headers = new Headers(userHeaders);
    const chunks = source ? await firstNonEmpty(source.chunks()) : null;
    const info = {
      encapsulatedKey: null,
      responseNonce: null,
      requestFrames: [],
      responseFrames: [],
      requestWireBytes: 0,
      responseWireBytes: 0,
      requestHead: new Uint8Array(0),
      responseHead: new Uint8Array(0),
      streamedUpload: false,
    };
    let sealer = null;
    let res;
    if (!chunks) {
      // A bodiless request goes as it is, and its answer is plain (EHBP §5.1): no key to seal to.
      headers.delete("content-type");
      res = await this._fetch(url.href, { ...rest, method, headers, body: null });
    } else {
      sealer = await EhbpRequestSealer.create(this._hpke.publicKey);
      headers.set(EHBP.encapsulatedKeyHeader, sealer.headerValue);
      info.encapsulatedKey = sealer.headerValue;
      info.requestFrames = sealer.frames;
      res = await this._sendEhbp(url, method, headers, rest, sealer, chunks, source, info);
    }
    const keptPlaintext = source?.bytes && source.bytes.length <= KEPT_PLAINTEXT ? lenientDecoder.decode(source.bytes) : null;
    const exchange = {
      kind: "request",
      format: this.format,
      method,
      url: url.href,
      requestHeaders: headersToObject(headers),
      requestBody: null,
      requestPlaintext: chunks ? keptPlaintext : null,
      status: res.status,
      responseHeaders: headersToObject(res.headers),
      responseBody: "",
      sealed: false,
      signature: "absent",
      plaintext: null,
      error: null,
      ehbp: info,
    };
    const fail = (err) => {
      if (err instanceof HybridError) err.status = err.status || res.status;
      exchange.error = { code: err.code ?? "error", message: err.message };
      this._record(exchange);
      throw err;
    };
    const noBody = method === "HEAD" || NULL_BODY_STATUSES.has(res.status) || !res.body;
    const nonce = res.headers.get(EHBP.responseNonceHeader);

    if (sealer === null || nonce === null) {
      const bytes = noBody ? new Uint8Array(0) : new Uint8Array(await res.arrayBuffer());
      exchange.responseBody = lenientDecoder.decode(bytes);
      info.responseWireBytes = bytes.length;
      info.responseHead = bytes.slice(0, WIRE_HEAD_BYTES);
      if (sealer !== null) {
        // Unsealed answer to a sealed request: a refusal, or something the path made up.
        if (isKeyConfigProblem(res, exchange.responseBody)) {
          fail(new HybridError("key_config_mismatch", "the request is not sealed to a current HPKE key of the server", { status: 422 }));
        }
        const refusal = parseRefusal(res, exchange.responseBody);
        if (refusal) fail(this._refusalError(refusal, res, { verified: false }));
        if (res.ok) fail(invalidResponse(`the server answered ${res.status} to a sealed request without sealing it`, res.status));
      }
      this._record(exchange);
      return buildResponse(res, res.status, noBody ? null : bytes, res.headers.get("content-type"));
    }

    // Sealed: opened whatever the status (EHBP §5.1), frame by frame as it arrives.
    let opener;
    try {
      opener = await sealer.responseOpener(nonce);
    } catch (err) {
      if (res.body) res.body.cancel().catch(() => {});
      fail(err);
    }
    info.responseNonce = nonce;
    info.responseFrames = opener.frames;
    exchange.sealed = true;
    exchange.signature = "not-needed";
    if (noBody) {
      this._record(exchange);
      return buildResponse(res, res.status, null, res.headers.get("content-type"));
    }
    const heads = [];
    const counted = res.body.pipeThrough(
      new TransformStream({
        transform(chunk, controller) {
          if (info.responseWireBytes < WIRE_HEAD_BYTES) heads.push(chunk.subarray(0, WIRE_HEAD_BYTES - info.responseWireBytes));
          info.responseWireBytes += chunk.length;
          controller.enqueue(chunk);
        },
      }),
    );
    const plaintext = openEhbpResponseStream(counted, opener, {
      onEnd: (error) => {
        info.responseHead = concatAll(heads);
        if (error) exchange.error = { code: error.code ?? "error", message: error.message };
        this._record(exchange);
      },
    });
    return buildResponse(res, res.status, plaintext, res.headers.get("content-type"));
  }

  /**
   * Send the sealed frames: streamed as they are sealed (a ReadableStream body, when allowed), or
   * collected into one body with a Content-Length, as the npm client sends. A streamed attempt
   * that fetch refuses before reading a byte (Chromium over HTTP/1.1) falls back to the latter.
   */
  async _sendEhbp(url, method, headers, rest, sealer, chunks, source, info) {
    const heads = [];
    const note = (frame) => {
      if (info.requestWireBytes < WIRE_HEAD_BYTES) heads.push(frame.subarray(0, WIRE_HEAD_BYTES - info.requestWireBytes));
      info.requestWireBytes += frame.length;
      info.requestHead = concatAll(heads);
    };
    const frames = sealedFrames(sealer, chunks);
    if (!source.replayable && this._mayStreamUpload()) {
      let pulled = false;
      const body = new ReadableStream(
        {
          async pull(controller) {
            pulled = true;
            try {
              const { done, value } = await frames.next();
              if (done) controller.close();
              else {
                note(value);
                controller.enqueue(value);
              }
            } catch (err) {
              controller.error(err);
            }
          },
        },
        { highWaterMark: 0 },
      );
      info.streamedUpload = true;
      try {
        return await this._fetch(url.href, { ...rest, method, headers, body, duplex: "half" });
      } catch (err) {
        if (pulled || !(err instanceof TypeError)) throw err;
        this._streamUploadRefused = true; // nothing was read: send it buffered, and from now on
        info.streamedUpload = false;
      }
    }
    const parts = [];
    for await (const frame of frames) {
      note(frame);
      parts.push(frame);
    }
    if (!this._beforeSend) return this._fetch(url.href, { ...rest, method, headers, body: new Blob(parts) });
    // The testing hook sees (and may change) the framed bytes of a buffered upload.
    const wire = { url: url.href, method, headers, body: concatAll(parts) };
    await this._beforeSend(wire);
    info.requestHead = toBytes(wire.body ?? new Uint8Array(0)).slice(0, WIRE_HEAD_BYTES);
    return this._fetch(wire.url, { ...rest, method: wire.method, headers: wire.headers, body: wire.body });
  }

  // -- Session (format S) -----------------------------------------------------------------------

  /** Make the handshake; concurrent callers share one handshake in flight. */
  _handshake() {
    if (!this._handshaking) {
      this._handshaking = this._doHandshake().finally(() => {
        this._handshaking = null;
      });
    }
    return this._handshaking;
  }

  async _doHandshake() {
    this._session = null;
    this._reuse = null;
    const raw = randomBytes(CEK_BYTES);
    const body = JSON.stringify({ aesKey: b64encode(raw), deviceId: this.deviceId });
    const aesKey = await importCek(raw);
    raw.fill(0);
    const headers = new Headers({ "Content-Type": "application/json", Accept: "application/json" });
    const wire = await this._send("handshake", this._hybridUrl("/session"), "POST", headers, body, {}, { digest: true });
    const exchange = this._exchange("handshake", wire, { sealed: false, signature: "absent" });
    try {
      // Every answer to the handshake, a refusal too, counts only signed for this handshake.
      exchange.signature = await this._verifyBound(wire);
      if (wire.res.status !== 201) {
        const refusal = parseRefusal(wire.res, wire.text);
        throw refusal
          ? this._refusalError(refusal, wire.res, { verified: wire.refusalCode === refusal.code })
          : invalidResponse(`the handshake answered ${wire.res.status}`, wire.res.status);
      }
      const envelope = tryParseJson(wire.text);
      const info = await openHandshakeResponse(aesKey, envelope);
      let publicKey;
      try {
        publicKey = await importRsaPublicKey(info.publicKey, "encrypt");
      } catch (err) {
        throw invalidResponse("the session public key is not a PEM RSA key", 0, err);
      }
      exchange.sealed = true;
      exchange.plaintext = JSON.stringify(info);
      this._session = {
        token: info.token,
        sessionId: info.sessionId,
        publicKey,
        expiresAt: Date.now() + info.expiresIn * 1000,
      };
    } catch (err) {
      exchange.error = { code: err.code ?? "error", message: err.message };
      if (err instanceof HybridError) err.status = err.status || wire.res.status;
      throw err;
    } finally {
      this._record(exchange);
    }
  }

  async _ensureSession() {
    const s = this._session;
    if (!s || Date.now() >= s.expiresAt - SESSION_EXPIRY_MARGIN_MS) await this._handshake();
    return this._session;
  }

  /** A CEK for this request: the reused one of `scope` with reuseKey, else a fresh one. */
  async _cek(scope, wrap) {
    if (this.reuseKey && this._reuse && this._reuse.scope === scope) return this._reuse;
    const prepared = await prepareCek(wrap, { answerKey: true });
    if (this.reuseKey) this._reuse = { scope, ...prepared };
    return prepared;
  }

  // -- One attempt ----------------------------------------------------------------------------

  async _attempt(request) {
    const { url, method, userHeaders, body, contentType, init } = request;
    const headers = new Headers(userHeaders);
    let wireBody = null;
    let open; // (wire) => {plaintext, status, contentType} for a sealed answer, or null if not sealed
    let mustBeSealed = true;
    // Encrypted requests carry Content-Digest, and any answer to them that is not sealed must be
    // signed for them. Only a bodiless format E request is not encrypted (E has no header form).
    const encrypted = this.format !== "envelope" || body !== null;

    if (this.format === "session") {
      const session = await this._ensureSession();
      request.session = session;
      const wrap = async (raw) => b64encode(await rsaOaepEncrypt(session.publicKey, raw));
      // A bodiless request wraps a fresh CEK even with reuseKey: its X-Encrypted-Aes-Key is all
      // that tells it apart from another bodiless request, and its answer's signature covers it.
      const prepared = body ? await this._cek(session.sessionId, wrap) : await prepareCek(wrap, { answerKey: true });
      const { cekKey, wrapped } = prepared;
      request.answerKey = prepared.answerKey;
      headers.set("Authorization", `Bearer ${session.token}`);
      headers.set("X-Device-Id", this.deviceId);
      headers.set("X-Encryption-Enabled", "true");
      if (body) {
        const { envelope } = await sealSessionRequest({ plaintext: body, cekKey, encryptedAesKey: wrapped });
        wireBody = JSON.stringify(envelope);
        headers.set("Content-Type", "application/json");
      } else {
        headers.set("X-Encrypted-Aes-Key", wrapped);
      }
      open = async (wire) => {
        const envelope = isJsonType(wire.res.headers.get("content-type")) ? tryParseJson(wire.text) : undefined;
        if (!envelope || typeof envelope !== "object" || typeof envelope.encryptedData !== "string") return null;
        return {
          plaintext: await openSessionResponse(cekKey, envelope),
          status: wire.res.status,
          contentType: wire.res.headers.get("x-plaintext-content-type") ?? "application/json",
        };
      };
    } else if (this.format === "jwe") {
      const record = this._identityKey();
      const publicKey = await this._encryptKey(record);
      const { cekKey, wrapped, answerKey } = await this._cek(record.kid, async (raw) =>
        b64urlEncode(await rsaOaepEncrypt(publicKey, raw)),
      );
      request.answerKey = answerKey;
      const sealed = await sealJweRequest({
        publicKey,
        kid: record.kid,
        method,
        target: HybridClient._target(url),
        payload: body ?? new Uint8Array(0),
        cty: body ? (isJsonType(contentType) ? "json" : contentType) : undefined,
        cekKey,
        encryptedKey: wrapped,
      });
      if (body) {
        wireBody = sealed.jwe;
        headers.set("Content-Type", "application/jose");
      } else {
        headers.set("X-Hybrid-JWE", sealed.jwe); // a fresh jti: unique even with reuseKey
      }
      open = async (wire) => {
        if (!/^application\/jose\s*(;|$)/i.test(wire.res.headers.get("content-type") ?? "")) return null;
        const opened = await openJweResponse(cekKey, wire.text, { req: sealed.jti });
        if (opened.status !== wire.res.status) {
          throw invalidResponse(
            `the sealed status ${opened.status} is not the HTTP status ${wire.res.status}`,
            wire.res.status,
          );
        }
        return opened;
      };
    } else if (body) {
      // Format E. A fresh CEK each time: E has no reuse (PROTOCOL.md allows it for S and J).
      const record = this._envelopeKey;
      const { envelope, cekKey, answerKey } = await sealEnvelopeRequest({
        plaintext: body,
        jsencrypt: this.jsencrypt,
        publicKey: this.jsencrypt ? undefined : await this._encryptKey(record),
        kid: record.kid,
        answerKey: true,
      });
      request.answerKey = answerKey;
      wireBody = JSON.stringify(envelope);
      headers.set("Content-Type", "application/json");
      headers.set("X-Encryption-Enabled", "true");
      if (this.encryptResponse) headers.set("X-Encrypt-Response", "true");
      mustBeSealed = false;
      open = async (wire) => {
        if (!this.encryptResponse || !isJsonType(wire.res.headers.get("content-type"))) return null;
        const envelope = tryParseJson(wire.text);
        if (!envelope || typeof envelope !== "object" || envelope.alg !== "AES-GCM") return null;
        return {
          plaintext: await openEnvelopeResponse(cekKey, envelope),
          status: wire.res.status,
          contentType: wire.res.headers.get("x-plaintext-content-type") ?? "application/json",
        };
      };
    } else {
      // Format E without a body: the protocol has no header form, so it goes in the clear and
      // its answer is checked only if signed (a bad signature still rejects it).
      mustBeSealed = false;
      open = async () => null;
    }

    const wire = await this._send("request", url, method, headers, wireBody, init, { digest: encrypted });
    const exchange = this._exchange("request", wire, { sealed: false, signature: "absent" });
    exchange.requestPlaintext = body ? lenientDecoder.decode(body) : null;
    const fail = (err) => {
      if (err instanceof HybridError) err.status = err.status || wire.res.status;
      exchange.error = { code: err.code ?? "error", message: err.message };
      this._record(exchange);
      throw err;
    };
    const signed = wire.res.headers.has("signature-input") || wire.res.headers.has("signature");
    /** The signature status; throws invalid_signature when it is required (or sent) and fails. */
    const checkSignature = async (required, unsigned) =>
      required || signed ? this._verifyBound(wire, { answerKey: request.answerKey }).catch(fail) : unsigned;

    if (method === "HEAD") {
      // No body comes back to a HEAD: nothing to open or to check a digest against.
      this._record(exchange);
      return buildResponse(wire.res, wire.res.status, null, null);
    }
    if (NULL_BODY_STATUSES.has(wire.res.status) || wire.bytes.length === 0) {
      // Nothing sealed came back (204, 304, ... or an empty body): to an encrypted request that
      // is an answer only if the server signed it for this request; a proxy could make it up.
      exchange.signature = await checkSignature(encrypted, "absent");
      this._record(exchange);
      return buildResponse(wire.res, wire.res.status, null, null);
    }

    const opened = await open(wire).catch(fail);
    if (opened) {
      // A sealed answer is authenticated by the AEAD; a signature is checked when sent anyway.
      // S's seal names no request, and a reused CEK opens earlier answers too: then only the
      // request-bound signature (the server signs S's sealed answers) says this one is ours.
      exchange.signature = await checkSignature(this.format === "session" && this.reuseKey, "not-needed");
      exchange.sealed = true;
      exchange.plaintext = lenientDecoder.decode(opened.plaintext);
      this._record(exchange);
      return buildResponse(wire.res, opened.status, opened.plaintext, opened.contentType);
    }
    // Not sealed: a refusal, or format E's plain answer. Either counts only signed for this
    // request; a verified refusal is one the server made before the app ran (so it may retry).
    exchange.signature = await checkSignature(encrypted, "absent");
    const refusal = parseRefusal(wire.res, wire.text);
    const verified = refusal !== null && wire.refusalCode === refusal.code;
    // A signed answer without the server's refusal mark is the app's own (format E in clear).
    if (refusal && (verified || exchange.signature !== "valid")) {
      return fail(this._refusalError(refusal, wire.res, { verified }));
    }
    if (mustBeSealed) {
      return fail(invalidResponse(`the server answered ${wire.res.status} without sealing the response`, wire.res.status));
    }
    this._record(exchange);
    return buildResponse(wire.res, wire.res.status, wire.bytes, wire.res.headers.get("content-type"));
  }

  /** The HybridError of a refusal; `verified`: its signature is bound to our request (retryable). */
  _refusalError({ code, message }, res, { verified }) {
    const error = new HybridError(code, message, {
      status: res.status,
      retryAfter: code === "rate_limited" ? parseRetryAfter(res.headers.get("retry-after")) : null,
    });
    if (verified) verifiedRefusals.add(error);
    return error;
  }

  // -- Wire -----------------------------------------------------------------------------------

  /**
   * Send one request. With `digest`, it carries the RFC 9530 Content-Digest of the body as sent
   * (PROTOCOL.md): the answer's signature binds to it.
   */
  async _send(kind, url, method, headers, body, init, { digest = false } = {}) {
    if (digest) headers.set("Content-Digest", await contentDigest(body));
    const wire = { url: url.href, method, headers, body };
    if (this._beforeSend && kind === "request") {
      const digestSent = headers.get("content-digest");
      await this._beforeSend(wire);
      // A hook that changed the body and left the digest stands for a tamperer who fixes it up.
      if (digest && wire.body !== body && wire.headers.get("content-digest") === digestSent) {
        wire.headers.set("Content-Digest", await contentDigest(wire.body));
      }
    }
    const { method: _m, headers: _h, body: _b, ...rest } = init;
    const res = await this._fetch(wire.url, { ...rest, method: wire.method, headers: wire.headers, body: wire.body });
    const bytes = method === "HEAD" ? new Uint8Array(0) : new Uint8Array(await res.arrayBuffer());
    return { ...wire, res, bytes, text: lenientDecoder.decode(bytes) };
  }

  _exchange(kind, wire, fields) {
    return {
      kind,
      format: this.format,
      method: wire.method,
      url: wire.url,
      requestHeaders: headersToObject(wire.headers),
      requestBody: wire.body,
      requestPlaintext: null,
      status: wire.res.status,
      responseHeaders: headersToObject(wire.res.headers),
      responseBody: wire.text,
      plaintext: null,
      error: null,
      ...fields,
    };
  }

  _record(exchange) {
    this.lastExchange = exchange;
    if (this.onExchange) {
      try {
        this.onExchange(exchange);
      } catch {
        // an observer's failure must not change the outcome of the request
      }
    }
  }
}
