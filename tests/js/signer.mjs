// An independent signer of flask-hybrid's request-bound response signatures, for the tests.
//
// Written from docs/PROTOCOL.md ("Request-bound response signatures (RFC 9421)") with Node's
// own crypto and plain string templates: it shares no code with hybrid.js, so a test that signs
// here and verifies there checks the client against the spec, not against itself. Its options
// exist to forge the defects a verifier must refuse.

import crypto from "node:crypto";

/** The RFC 9530 Content-Digest value of some bytes: `sha-256=:<b64>:`. */
export const digestOf = (bytes) => `sha-256=:${crypto.createHash("sha256").update(Buffer.from(bytes ?? "")).digest("base64")}:`;

const KEY_HEADERS = ["x-hybrid-jwe", "x-encrypted-aes-key"];

/** The components PROTOCOL.md has the server cover for a request with these headers, in order. */
export function coveredComponents(requestHeaders, refusal = null) {
  const components = ['"@status"', '"content-digest"'];
  if (refusal !== null) components.push('"x-hybrid-refusal"');
  components.push('"@method";req');
  if (requestHeaders.has("content-digest")) components.push('"content-digest";req');
  for (const name of KEY_HEADERS) if (requestHeaders.has(name)) components.push(`"${name}";req`);
  return components;
}

/**
 * The headers that sign a response: Content-Digest, Signature-Input and Signature (plus the
 * signature base under `base`, for tests that compare it).
 *
 * `request` is what the server received: `{method, headers}` (a Headers). Overrides forge
 * defects: `components`, `label`, `tag`, `alg`, `keyid`, `created` (null leaves it out),
 * `digest` (the Content-Digest value sent), `signedStatus` (the status put in the base),
 * `corrupt` (flip a bit of the signature). `refusal`: the code of a refusal of the server's own,
 * sent and covered as X-Hybrid-Refusal. `cek`: sign as the server signs format S's sealed
 * answers, an HMAC-SHA256 (keyid "cek") under HKDF-SHA256(cek, info "flask-hybrid answer binding").
 */
export function signResponse({
  privatePem,
  kid,
  status,
  body,
  request,
  created = Math.floor(Date.now() / 1000),
  components,
  label = "hybrid",
  tag = "flask-hybrid",
  alg = "rsa-v1_5-sha256",
  keyid = kid,
  digest,
  signedStatus = status,
  corrupt = false,
  refusal = null,
  cek = null,
}) {
  const sentDigest = digest ?? digestOf(body);
  const covered = components ?? coveredComponents(request.headers, refusal);
  const valueOf = (id) => {
    if (id === '"@status"') return String(signedStatus);
    if (id === '"content-digest"') return sentDigest;
    if (id === '"x-hybrid-refusal"') return refusal;
    if (id === '"@method";req') return request.method;
    const field = /^"([a-z0-9-]+)";req$/.exec(id);
    if (field && request.headers.has(field[1])) return request.headers.get(field[1]).trim();
    return "unknown";
  };
  const hmacKey = cek === null ? null : Buffer.from(crypto.hkdfSync("sha256", cek, Buffer.alloc(0), "flask-hybrid answer binding", 32));
  let params = `(${covered.join(" ")})`;
  if (created !== null) params += `;created=${created}`;
  params += hmacKey ? `;keyid="cek";alg="hmac-sha256";tag="${tag}"` : `;keyid="${keyid}";alg="${alg}";tag="${tag}"`;
  const base = [...covered.map((id) => `${id}: ${valueOf(id)}`), `"@signature-params": ${params}`].join("\n");
  const signature = hmacKey
    ? crypto.createHmac("sha256", hmacKey).update(base, "utf8").digest()
    : crypto.sign("sha256", Buffer.from(base, "utf8"), privatePem);
  if (corrupt) signature[7] ^= 1;
  return {
    headers: {
      ...(refusal === null ? {} : { "X-Hybrid-Refusal": refusal }),
      "Content-Digest": sentDigest,
      "Signature-Input": `${label}=${params}`,
      Signature: `${label}=:${signature.toString("base64")}:`,
    },
    base,
  };
}
