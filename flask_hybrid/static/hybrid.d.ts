// Type declarations for hybrid.js, the flask-hybrid browser module (PROTOCOL.md formats S, E, J).

/** Error codes a flask-hybrid server answers with (PROTOCOL.md, "Errors"). */
export type ServerErrorCode =
  | "invalid_payload"
  | "invalid_session"
  | "unknown_key"
  | "replayed_request"
  | "payload_too_large"
  | "encryption_required"
  | "rate_limited"
  | "store_unavailable";

/**
 * Client-side codes: `invalid_signature` (a required X-Response-Signature is missing or does not
 * verify), `invalid_response` (a response that does not open, is malformed, answers another
 * request, or is not sealed when it must be).
 */
export type ClientErrorCode = "invalid_signature" | "invalid_response";

export type HybridErrorCode = ServerErrorCode | ClientErrorCode;

export declare const SERVER_ERROR_CODES: readonly ServerErrorCode[];

/** Every protocol failure. Network failures stay the TypeError that fetch throws. */
export declare class HybridError extends Error {
  constructor(
    code: HybridErrorCode | string,
    message?: string,
    details?: { status?: number; retryAfter?: number | null; cause?: unknown },
  );
  readonly name: "HybridError";
  code: HybridErrorCode;
  /** HTTP status of the response concerned; 0 when there was none (a local check). */
  status: number;
  /** Seconds from a 429's Retry-After; null otherwise. */
  retryAfter: number | null;
}

export type Format = "jwe" | "session" | "envelope";

/** The part of a JSEncrypt instance the module uses (npm `jsencrypt`, PKCS#1 v1.5). */
export interface JSEncryptLike {
  setPublicKey(pem: string): void;
  /** base64 ciphertext, or false on failure */
  encrypt(text: string): string | false | null;
}

/** What `beforeSend` sees, and may change, just before a request goes on the wire. */
export interface WireRequest {
  url: string;
  method: string;
  headers: Headers;
  body: string | null;
}

/** What travelled on the wire in one exchange, for display ("what travelled on the wire"). */
export interface ExchangeInfo {
  /** "request": a client.fetch(); "handshake": POST {prefix}/session; "close": DELETE {prefix}/session */
  kind: "request" | "handshake" | "close";
  format: Format;
  method: string;
  url: string;
  /** Headers as sent (lower-case names), e.g. content-type, x-hybrid-jwe, authorization. */
  requestHeaders: Record<string, string>;
  /** The body as sent (JWE compact or JSON envelope text); null for a bodiless request. */
  requestBody: string | null;
  /** The request body before encryption (text), null without one. */
  requestPlaintext: string | null;
  status: number;
  responseHeaders: Record<string, string>;
  /** The raw response body text as received (the sealed form when sealed). */
  responseBody: string;
  /** The response was sealed and opened (false for refusals and plain E answers). */
  sealed: boolean;
  /**
   * X-Response-Signature: "valid" (present and verified), "absent" (none, and none was required),
   * "not-needed" (none, on a sealed answer: the AEAD authenticates it). A bad or required-but-
   * missing signature rejects with `invalid_signature` (then `error` says so).
   */
  signature: "valid" | "absent" | "not-needed";
  /** The decrypted response body text, when sealed. */
  plaintext: string | null;
  /** The error this exchange ended with, if any. */
  error: { code: string; message: string } | null;
}

export interface ConnectOptions {
  /** The wire format: "session" = S, "envelope" = E, "jwe" = J (PROTOCOL.md). */
  format: Format;
  /** Origin (and mount path) of the API, e.g. "https://api.example.com"; "" = same origin. */
  baseUrl?: string;
  /** The blueprint's URL prefix. Default "/hybrid". */
  prefix?: string;
  /** Format S device id: 1..128 printable ASCII characters, no spaces. Default: random per client. */
  deviceId?: string;
  /**
   * Format E: a JSEncrypt instance; its public key is set to the server's (GET {prefix}/public-key)
   * and `ek` is its PKCS#1 v1.5 encryption of b64(CEK), alg "RSA+AES-GCM". Without it, E uses
   * Web Crypto RSA-OAEP-256 over the raw CEK, alg "RSA-OAEP-256+AES-GCM".
   */
  jsencrypt?: JSEncryptLike | null;
  /** Formats S and J: one CEK (and wrapped key) per session / identity key, fresh IV and jti each time. */
  reuseKey?: boolean;
  /** The identity key used and the signatures verified must have this kid (RFC 7638 thumbprint). */
  pinnedKid?: string | null;
  /** Format E: send X-Encrypt-Response: true and open the sealed answer. Default true. */
  encryptResponse?: boolean;
  /** The fetch to use. Default globalThis.fetch. */
  fetchImpl?: (url: string, init: RequestInit) => Promise<Response>;
  /** Called with every exchange's ExchangeInfo (requests, handshake, close). */
  onExchange?: ((exchange: ExchangeInfo) => void) | null;
  /** Testing/debugging hook: may change the request just before it is sent (e.g. flip a byte). */
  beforeSend?: ((wire: WireRequest) => void | Promise<void>) | null;
}

/** Request init of HybridClient.fetch: a fetch RequestInit whose body may also be a plain object (sent as JSON). */
export type HybridRequestInit = Omit<RequestInit, "body"> & {
  body?: string | ArrayBuffer | ArrayBufferView | Blob | URLSearchParams | Record<string, unknown> | unknown[] | null;
};

export declare class HybridClient {
  /**
   * Fetch the server's keys (GET {prefix}/jwks.json; format E: GET {prefix}/public-key) and, for
   * "session", make the signed handshake. Rejects with HybridError (`unknown_key` when a pinned kid
   * is not served, `invalid_signature` for a bad handshake signature, ...).
   */
  static connect(options: ConnectOptions): Promise<HybridClient>;

  /** Prefer HybridClient.connect: a bare instance has no keys yet. */
  constructor(options: ConnectOptions);

  readonly format: Format;
  readonly baseUrl: string;
  readonly prefix: string;
  readonly deviceId: string;
  reuseKey: boolean;
  pinnedKid: string | null;
  encryptResponse: boolean;
  onExchange: ((exchange: ExchangeInfo) => void) | null;
  /** The last exchange of a request, handshake or close (see ExchangeInfo). */
  lastExchange: ExchangeInfo | null;
  /** Format S: the current session id; null otherwise. */
  readonly sessionId: string | null;
  /** Formats J and E: the kid of the identity key requests are encrypted to. */
  readonly kid: string | null;

  /**
   * Send a request through the encryption layer and resolve to a standard Response: the server's
   * status and headers, the decrypted body, Content-Type = the app's content type.
   *
   * `input`: a path ("/api/orders?x=1", joined to baseUrl) or an absolute URL. The body's content
   * type is init.headers Content-Type, default application/json (S and E carry JSON only: a
   * TypeError otherwise). Without a body (GET, DELETE, HEAD...), J sends X-Hybrid-JWE and S sends
   * X-Encrypted-Aes-Key so that the answer is still sealed; E has no such form and sends the
   * request in the clear (its answer's signature is verified when present).
   *
   * Retries once after `unknown_key` (keys refetched) and, format S, after `invalid_session`
   * (new handshake). Other refusals reject with their HybridError.
   */
  fetch(input: string | URL, init?: HybridRequestInit): Promise<Response>;

  /**
   * Format S: DELETE {prefix}/session, forget the session; later fetch() calls reject with
   * `invalid_session`. Formats J and E: forget a reused CEK; the client stays usable.
   */
  close(): Promise<void>;
}

// ---- Encoding helpers -------------------------------------------------------------------------

export type BytesLike = string | ArrayBuffer | ArrayBufferView;

/** Standard base64 with padding (RFC 4648 §4). Strings are encoded as UTF-8 first. */
export declare function b64encode(data: BytesLike): string;
/** Strict standard base64 (padding required, no whitespace, no URL-safe alphabet); TypeError otherwise. */
export declare function b64decode(text: string): Uint8Array;
/** URL-safe base64 without padding (JOSE). */
export declare function b64urlEncode(data: BytesLike): string;
/** Strict URL-safe base64 without padding; TypeError otherwise. */
export declare function b64urlDecode(text: string): Uint8Array;
export declare function utf8Encode(text: string): Uint8Array;
/** Strict UTF-8 decoding; TypeError on invalid UTF-8. */
export declare function utf8Decode(bytes: Uint8Array): string;
export declare function toBytes(data: BytesLike): Uint8Array;
export declare function randomBytes(n: number): Uint8Array;

// ---- Keys and primitives (Web Crypto) ---------------------------------------------------------

export interface RsaPublicJwk {
  kty?: "RSA";
  n: string;
  e: string;
  kid?: string;
}
/** A public key as the module accepts it: an imported CryptoKey, a PEM SubjectPublicKeyInfo, or a JWK. */
export type PublicKeyLike = CryptoKey | string | RsaPublicJwk;

export declare function pemToDer(pem: string): Uint8Array;
export declare function derToPem(der: Uint8Array): string;
export declare function pemToJwk(pem: string): Promise<{ kty: "RSA"; n: string; e: string }>;
export declare function jwkToPem(jwk: RsaPublicJwk): Promise<string>;
/** Import for RSA-OAEP-256 encryption ("encrypt") or RSASSA-PKCS1-v1_5 SHA-256 verification ("verify"). */
export declare function importRsaPublicKey(
  key: string | RsaPublicJwk,
  use?: "encrypt" | "verify",
  extractable?: boolean,
): Promise<CryptoKey>;
/** RFC 7638 thumbprint (SHA-256, b64url): flask-hybrid's kid. */
export declare function jwkThumbprint(jwk: RsaPublicJwk): Promise<string>;
export declare function rsaOaepEncrypt(publicKey: PublicKeyLike, data: BytesLike): Promise<Uint8Array>;
/** Import a raw 32-byte CEK as a non-extractable AES-256-GCM CryptoKey. */
export declare function importCek(raw: BytesLike): Promise<CryptoKey>;
/** AES-256-GCM; `iv` defaults to 12 random bytes. */
export declare function aesGcmSeal(
  key: CryptoKey | BytesLike,
  plaintext: BytesLike,
  options?: { iv?: BytesLike; aad?: BytesLike },
): Promise<{ iv: Uint8Array; ciphertext: Uint8Array; tag: Uint8Array }>;
/** AES-256-GCM decryption; any failure rejects with HybridError `invalid_response`. */
export declare function aesGcmOpen(
  key: CryptoKey | BytesLike,
  iv: Uint8Array,
  ciphertext: Uint8Array,
  tag: Uint8Array,
  aad?: BytesLike,
): Promise<Uint8Array>;
/** Verify an X-Response-Signature (b64 RSASSA-PKCS1-v1_5 SHA-256) over the exact body bytes. */
export declare function verifySignature(
  key: CryptoKey | string | RsaPublicJwk,
  signatureB64: string,
  body: BytesLike,
): Promise<boolean>;

// ---- Format builders and openers ---------------------------------------------------------------
// `cek` and `iv` (and J's `jti`/`iat`) fix what is otherwise random: for known-answer tests only.
// Raw CEK bytes given by the caller are not zeroed; random ones made here are, once wrapped.

export interface SessionEnvelope {
  encryptedAesKey: string;
  encryptedData: string;
  iv: string;
  authTag: string;
}
export interface SessionSealedResponse {
  encryptedData: string;
  iv: string;
  authTag: string;
}
/** Format S request body; give `cekKey` + `encryptedAesKey` to reuse a CEK. */
export declare function sealSessionRequest(options: {
  publicKey?: PublicKeyLike;
  plaintext: BytesLike;
  cek?: BytesLike;
  iv?: BytesLike;
  cekKey?: CryptoKey;
  encryptedAesKey?: string;
}): Promise<{ envelope: SessionEnvelope; cekKey: CryptoKey; encryptedAesKey: string }>;
/** Open a format S sealed body (a response, or the handshake response under aesKey). */
export declare function openSessionResponse(
  key: CryptoKey | BytesLike,
  envelope: SessionSealedResponse,
): Promise<Uint8Array>;
/** Open and check the S handshake's 201 body. */
export declare function openHandshakeResponse(
  key: CryptoKey | BytesLike,
  envelope: SessionSealedResponse,
): Promise<{ token: string; publicKey: string; sessionId: string; expiresIn: number }>;

export interface EnvelopeRequest {
  alg: "RSA+AES-GCM" | "RSA-OAEP-256+AES-GCM";
  ek: string;
  iv: string;
  ct: string;
  kid?: string;
}
export interface EnvelopeSealedResponse {
  alg: "AES-GCM";
  iv: string;
  ct: string;
}
/** Format E request body: PKCS#1 v1.5 through `jsencrypt` (over b64(CEK)), else OAEP-256 (raw CEK) under `publicKey`. */
export declare function sealEnvelopeRequest(options: {
  plaintext: BytesLike;
  publicKey?: PublicKeyLike;
  jsencrypt?: JSEncryptLike | null;
  kid?: string;
  cek?: BytesLike;
  iv?: BytesLike;
}): Promise<{ envelope: EnvelopeRequest; cekKey: CryptoKey }>;
export declare function openEnvelopeResponse(
  key: CryptoKey | BytesLike,
  envelope: EnvelopeSealedResponse,
): Promise<Uint8Array>;

/**
 * Format J request JWE compact. Header members in order alg, enc, kid, htm, htu, iat, jti[, cty];
 * `cty` omitted when null/undefined. `payload` empty = the X-Hybrid-JWE header form.
 */
export declare function sealJweRequest(options: {
  publicKey: PublicKeyLike;
  kid: string;
  method: string;
  /** htu: path and query exactly as sent, starting with "/" */
  target: string;
  payload?: BytesLike;
  cty?: string | null;
  iat?: number;
  jti?: string;
  cek?: BytesLike;
  iv?: BytesLike;
  cekKey?: CryptoKey;
  /** b64url wrapped CEK, with cekKey, to reuse */
  encryptedKey?: string;
}): Promise<{ jwe: string; jti: string; cekKey: CryptoKey; encryptedKey: string; protectedHeader: string }>;

export interface JweResponseHeader {
  alg: "dir";
  enc: "A256GCM";
  req: string;
  status: number;
  cty?: string;
  [member: string]: unknown;
}
/** Open a format J `dir` response; with `req`, the header's req must equal it (our jti). */
export declare function openJweResponse(
  key: CryptoKey | BytesLike,
  jwe: string,
  options?: { req?: string },
): Promise<{ header: JweResponseHeader; plaintext: Uint8Array; status: number; contentType: string | null }>;
