// Type declarations for hybrid.js, the flask-hybrid browser module (PROTOCOL.md formats S, E, J, H).

/** Error codes a flask-hybrid server answers with (PROTOCOL.md, "Errors"). */
export type ServerErrorCode =
  | "invalid_payload"
  | "invalid_session"
  | "unknown_key"
  | "replayed_request"
  | "payload_too_large"
  | "encryption_required"
  | "rate_limited"
  | "store_unavailable"
  /** Format H: EHBP's 422 key-configuration problem (the request is sealed to a key the server lacks). */
  | "key_config_mismatch";

/**
 * Client-side codes: `invalid_signature` (an answer that counts only with the server's RFC 9421
 * signature bound to this request — a refusal, a bodiless or unsealed answer to an encrypted
 * request, the handshake's or the session DELETE's answer — has none, or one that does not
 * verify or answers another request; never retried), `invalid_response` (a response that does
 * not open, is malformed, answers another request, or is not sealed when it must be).
 */
export type ClientErrorCode = "invalid_signature" | "invalid_response";

export type HybridErrorCode = ServerErrorCode | ClientErrorCode;

export declare const SERVER_ERROR_CODES: readonly ServerErrorCode[];
/** The HTTP status of each code of the error table; a refusal must carry its code's status. */
export declare const SERVER_ERROR_STATUS: Readonly<Record<ServerErrorCode, number>>;

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

/** "jwe" = J, "session" = S, "envelope" = E, "ehbp" = H (EHBP: HPKE-sealed, framed, streamed bodies). */
export type Format = "jwe" | "session" | "envelope" | "ehbp";

/** The part of a JSEncrypt instance the module uses (npm `jsencrypt`, PKCS#1 v1.5). */
export interface JSEncryptLike {
  setPublicKey(pem: string): void;
  /** base64 ciphertext, or false on failure */
  encrypt(text: string): string | false | null;
}

/**
 * What `beforeSend` sees, and may change, just before a request goes on the wire. A changed body
 * gets a fresh Content-Digest unless the hook changed that header itself.
 */
export interface WireRequest {
  url: string;
  method: string;
  headers: Headers;
  /** Format H: the framed bytes of a buffered upload (a streamed one is not shown to the hook). */
  body: string | Uint8Array | null;
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
   * The request-bound RFC 9421 signature (Signature-Input / Signature): "valid" (verified and
   * bound to this request), "absent" (none, and none was required: a plain request's answer),
   * "not-needed" (none, on a sealed answer: the AEAD authenticates it). A bad or required-but-
   * missing signature rejects with `invalid_signature` (then `error` says so).
   * X-Response-Signature (body only) plays no part in the client's decisions.
   */
  signature: "valid" | "absent" | "not-needed";
  /** The decrypted response body text, when sealed. */
  plaintext: string | null;
  /** The error this exchange ended with, if any. */
  error: { code: string; message: string } | null;
  /**
   * Format H only. `requestBody` is then null and `responseBody` the text of an unsealed answer
   * ("" when sealed); `plaintext` is null (read the Response); `requestPlaintext` is kept for
   * in-memory bodies up to 1 MiB. A sealed answer's exchange is reported (onExchange,
   * lastExchange) once its body has been read to the end, or failed.
   */
  ehbp?: EhbpWireInfo;
}

/** What format H put on the wire, for display. Frame lengths count ciphertext (plaintext + 16). */
export interface EhbpWireInfo {
  /** Ehbp-Encapsulated-Key sent (64 lowercase hex digits); null for a bodiless request (sent plain). */
  encapsulatedKey: string | null;
  /** Ehbp-Response-Nonce received; null when the answer was not sealed. */
  responseNonce: string | null;
  requestFrames: number[];
  /** Filled as the answer is read. */
  responseFrames: number[];
  requestWireBytes: number;
  responseWireBytes: number;
  /** The first (up to 512) bytes of the body as sent / as received. */
  requestHead: Uint8Array;
  responseHead: Uint8Array;
  /** The upload went as a stream (duplex "half"), not as one body with a Content-Length. */
  streamedUpload: boolean;
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
  /**
   * The identity key used must have this kid (RFC 7638 thumbprint); by default the signing key too.
   * Format H: the HPKE public key of /.well-known/hpke-keys, as hex.
   */
  pinnedKid?: string | null;
  /**
   * Format H: send a ReadableStream body as it is sealed (fetch with duplex "half"). "auto" (the
   * default) does, except in a browser that got the keys over HTTP/1.x (browsers stream uploads
   * over HTTP/2 and HTTP/3 only); a streamed attempt that fetch refuses before reading a byte is
   * sent again as one body with a Content-Length, and later ones go that way directly. false:
   * always one body.
   */
  streamUploads?: "auto" | boolean;
  /**
   * Response signatures must be made by the signing key with this kid (jwks.json entries with
   * `"use": "sig"`, or any entry when none says `use`). Default: pinnedKid; null: any signing key.
   */
  pinnedSigningKid?: string | null;
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
  /** A ReadableStream<Uint8Array> body: format H only (read once; not resent after a 422). */
  body?:
    | string
    | ArrayBuffer
    | ArrayBufferView
    | Blob
    | URLSearchParams
    | ReadableStream<Uint8Array>
    | Record<string, unknown>
    | unknown[]
    | null;
};

export declare class HybridClient {
  /**
   * Fetch the server's keys (GET {prefix}/jwks.json; format E: GET {prefix}/public-key) and, for
   * "session", make the signed handshake. Rejects with HybridError (`unknown_key` when a pinned kid
   * is not served, `invalid_signature` when the handshake's answer is not signed for it, ...).
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
  pinnedSigningKid: string | null;
  encryptResponse: boolean;
  /** Format H: see ConnectOptions.streamUploads. */
  streamUploads: "auto" | boolean;
  onExchange: ((exchange: ExchangeInfo) => void) | null;
  /** The last exchange of a request, handshake or close (see ExchangeInfo). */
  lastExchange: ExchangeInfo | null;
  /** Format S: the current session id; null otherwise. */
  readonly sessionId: string | null;
  /** Formats J and E: the kid of the identity key requests are encrypted to; format H: the HPKE public key (hex). */
  readonly kid: string | null;

  /**
   * Send a request through the encryption layer and resolve to a standard Response: the server's
   * status and headers, the decrypted body, Content-Type = the app's content type.
   *
   * `input`: a path ("/api/orders?x=1", joined to baseUrl) or an absolute URL. The body's content
   * type is init.headers Content-Type, default application/json (S and E carry JSON only: a
   * TypeError otherwise). Without a body (GET, DELETE, HEAD...), J sends X-Hybrid-JWE and S sends
   * X-Encrypted-Aes-Key (a fresh wrapped CEK each time) so that the answer is still sealed; E has
   * no such form and sends the request in the clear (its answer's signature is verified when
   * present). Encrypted requests carry `Content-Digest: sha-256=:...:` (RFC 9530). A HEAD's
   * answer has no body to open or check: it is returned as it came, never retried.
   *
   * An answer that is not sealed — a refusal, a 204/304 or empty body, format E's plain answer —
   * counts only with the server's RFC 9421 signature bound to this request; otherwise the call
   * rejects with `invalid_signature` and is never retried (the app may have run the request).
   * Retries once after such a verified `unknown_key` (keys refetched) and, format S,
   * `invalid_session` (new handshake). Other refusals reject with their HybridError.
   *
   * Format H (EHBP): the body is sealed to the HPKE key of `/.well-known/hpke-keys` (origin root)
   * as frames of 64 KiB plaintext; its Content-Type header (default: application/json for strings
   * and objects, the Blob's type, else application/octet-stream) travels in clear, as EHBP has it.
   * A bodiless request (or a stream that yields no byte) goes plain and its answer is plain.
   * A sealed answer resolves as soon as its headers arrive, whatever its status; its body is a
   * ReadableStream of plaintext, one chunk per authenticated frame, which errors with
   * `invalid_response` at a frame that does not open or a body cut inside a frame. An unsealed
   * 2xx rejects with `invalid_response`; an unsealed refusal of the error table rejects with its
   * code (unsigned: EHBP has no signatures); other unsealed answers resolve as received, not
   * authenticated. The 422 key-config problem refetches the keys and resends once when the body
   * is not a ReadableStream; otherwise it rejects with `key_config_mismatch` (keys refetched).
   * EHBP binds no method, path or time and has no replay protection.
   */
  fetch(input: string | URL, init?: HybridRequestInit): Promise<Response>;

  /**
   * Format S: DELETE {prefix}/session, forget the session; later fetch() calls reject with
   * `invalid_session`. Rejects with `invalid_signature` when the answer is not signed for this
   * DELETE (the session is forgotten locally anyway). Formats J and E: forget a reused CEK; the
   * client stays usable.
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
/**
 * Verify an X-Response-Signature (b64 RSASSA-PKCS1-v1_5 SHA-256) over the exact body bytes. It
 * says nothing about which request the body answers: the client decides on verifyResponseSignature.
 */
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
  /** Also derive the HMAC key that binds the server's answers to this request. */
  answerKey?: boolean;
}): Promise<{ envelope: EnvelopeRequest; cekKey: CryptoKey; answerKey?: CryptoKey }>;
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

// ---- Request-bound response signatures (RFC 9421, RFC 9530, RFC 8941) -------------------------

/** An RFC 8941 token. */
export interface SfToken {
  readonly token: string;
}
/** The bare items of the supported subset: strings, integers, booleans, byte sequences, tokens. */
export type SfBareItem = string | number | boolean | Uint8Array | SfToken;
export interface SfItem {
  value: SfBareItem;
  params: Map<string, SfBareItem>;
}
export interface SfInnerList {
  value: SfItem[];
  params: Map<string, SfBareItem>;
}
/**
 * Parse an RFC 8941 dictionary strictly (decimals, dates and display strings are refused; byte
 * sequences are strict padded base64). Throws a SyntaxError on any defect.
 */
export declare function parseStructuredDictionary(text: string): Map<string, SfItem | SfInnerList>;

/** `sha-256=:<b64>:`, the RFC 9530 Content-Digest of a body (null/undefined = empty). */
export declare function contentDigest(body: BytesLike | null | undefined): Promise<string>;
/** Whether a Content-Digest value has a sha-256 member and every sha-256/sha-512 member matches. */
export declare function contentDigestMatches(fieldValue: string, body: BytesLike | null | undefined): Promise<boolean>;

/** Headers as a Headers object or a plain record. */
export type HeadersLike = Headers | Record<string, string>;
/** The request as the client sent it. */
export interface SentRequest {
  method: string;
  headers: HeadersLike;
}
/** The response as received. */
export interface ReceivedResponse {
  status: number;
  headers: HeadersLike;
}

/**
 * The components (serialized, e.g. `"@method";req`) a response to a request with these headers
 * must cover: "@status", "content-digest", "@method";req, "content-digest";req when sent, and
 * the key header of a bodiless request ("x-hybrid-jwe";req / "x-encrypted-aes-key";req).
 */
export declare function requiredSignatureComponents(requestHeaders: HeadersLike): string[];

/**
 * Read a response's `hybrid` signature and rebuild its signature base (RFC 9421 §2.5) from the
 * request as sent and the response as received, with no cryptography: nothing returned is
 * trusted yet. Rejects a wrong label, tag, alg, a missing keyid or created, or a missing required
 * component with HybridError `invalid_signature` (thrown).
 */
export declare function unverifiedResponseSignature(options: {
  request: SentRequest;
  response: ReceivedResponse;
}): {
  base: string;
  alg: "rsa-v1_5-sha256" | "hmac-sha256";
  keyid: string;
  created: number;
  components: string[];
  signature: Uint8Array;
};

/**
 * The HMAC key (verify only) that binds the server's answers to a request: HKDF-SHA256 of the
 * request's raw CEK, info "flask-hybrid answer binding" (keyid "cek", alg "hmac-sha256").
 */
export declare function deriveAnswerKey(rawCek: BytesLike): Promise<CryptoKey>;

/**
 * Verify a flask-hybrid response signature bound to this request (PROTOCOL.md, "How a client
 * verifies an answer"): parameters and components, Content-Digest = the received body's, and
 * RSASSA-PKCS1-v1_5 SHA-256 under `keyFor(keyid, alg)` (null: keyid is no signing key), or for
 * alg "hmac-sha256" the HMAC under the CryptoKey of `deriveAnswerKey`. Resolves to the keyid;
 * rejects with HybridError `invalid_signature`.
 */
export declare function verifyResponseSignature(options: {
  request: SentRequest;
  response: ReceivedResponse & { body: BytesLike };
  keyFor: (
    keyid: string,
    alg: "rsa-v1_5-sha256" | "hmac-sha256",
  ) => PublicKeyLike | CryptoKey | null | Promise<PublicKeyLike | CryptoKey | null>;
}): Promise<string>;

// ---- Format H (EHBP): HPKE and frames -------------------------------------------------------------

export declare const EHBP: Readonly<{
  keysPath: "/.well-known/hpke-keys";
  keysMediaType: "application/ohttp-keys";
  encapsulatedKeyHeader: "Ehbp-Encapsulated-Key";
  responseNonceHeader: "Ehbp-Response-Nonce";
  keyConfigProblemType: "urn:ietf:params:ehbp:error:key-config";
  requestInfo: "ehbp request";
  exportLabel: "ehbp response";
  frameSize: number;
  maxResponseFrame: number;
  maxFrames: number;
}>;

export declare function bytesToHex(bytes: BytesLike): string;
/** Bytes of a hex string (either case); TypeError otherwise. */
export declare function hexToBytes(text: string): Uint8Array;

/** An RFC 9458 key_config (one, bare); the suite X25519 / HKDF-SHA256 / AES-256-GCM must be offered. HybridError `invalid_response` otherwise. */
export declare function parseKeyConfig(data: BytesLike): { keyId: number; publicKey: Uint8Array };

/** An RFC 9180 base-mode sender context of the suite. */
export declare class HpkeSenderContext {
  private constructor();
  readonly enc: Uint8Array;
  /** The next sequence number. */
  readonly seq: number;
  seal(plaintext: BytesLike, aad?: BytesLike): Promise<Uint8Array>;
  export(exporterContext: BytesLike, length: number): Promise<Uint8Array>;
}

/** SetupBaseS(pkR, info); `ephemeralKeyPair` fixes skE for known-answer tests only. */
export declare function setupHpkeSender(
  publicKey: BytesLike,
  info: BytesLike,
  options?: { ephemeralKeyPair?: CryptoKeyPair },
): Promise<HpkeSenderContext>;

/** EHBP's response key and base nonce (RFC 9458 §4.4), raw, for known-answer tests. */
export declare function deriveEhbpResponseKeys(
  exportedSecret: BytesLike,
  enc: BytesLike,
  responseNonce: BytesLike,
): Promise<{ key: Uint8Array; baseNonce: Uint8Array }>;

/** Opens a format H response body as it arrives; failures are HybridError `invalid_response`. */
export declare class EhbpResponseOpener {
  private constructor();
  static create(
    exportedSecret: BytesLike,
    enc: BytesLike,
    responseNonce: BytesLike,
    options?: { maxFrame?: number },
  ): Promise<EhbpResponseOpener>;
  /** Ciphertext lengths of the frames opened so far. */
  readonly frames: number[];
  /** Plaintexts of the frames completed (those before a failing frame too; the failure is thrown next). */
  feed(data: BytesLike): Promise<Uint8Array[]>;
  /** Throws if the body ended inside a frame. */
  finish(): void;
}

/** Seals a request body to the server's HPKE key as EHBP frames. */
export declare class EhbpRequestSealer {
  private constructor();
  static create(publicKey: BytesLike, options?: { ephemeralKeyPair?: CryptoKeyPair }): Promise<EhbpRequestSealer>;
  readonly enc: Uint8Array;
  /** The Ehbp-Encapsulated-Key value (lowercase hex). */
  readonly headerValue: string;
  /** Ciphertext lengths of the frames sealed so far. */
  readonly frames: number[];
  /** Framed ciphertext of a part of the body (one frame per EHBP.frameSize bytes). */
  seal(plaintext: BytesLike): Promise<Uint8Array>;
  exportedSecret(): Promise<Uint8Array>;
  /** The opener of the answer, from its Ehbp-Response-Nonce (64 hex digits). */
  responseOpener(nonceHeader: string | null, options?: { maxFrame?: number }): Promise<EhbpResponseOpener>;
}

/** The plaintext of a format H response body, frame by frame; `onEnd` once at its end, failure or cancel. */
export declare function openEhbpResponseStream(
  body: ReadableStream<Uint8Array>,
  opener: EhbpResponseOpener,
  options?: { onEnd?: (error: HybridError | null) => void },
): ReadableStream<Uint8Array>;
