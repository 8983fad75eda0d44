// One purchase order placed through hybrid.js, for tests/test_attack_browser.py.
//
// Browser-safe (Web Crypto and fetch only): headless Chromium imports it from the test app's
// page, Node from attack_client.mjs, so both run the same steps. It never throws: it resolves to
// what happened — the Response's status and body, or the error's name, code and status — with
// every request the client sent (`sent`, "METHOD /path") and every exchange it recorded.

/** Make the client encrypt to a key the server does not have (as after a rotation): unknown_key. */
async function encryptToAnUnknownKey(hybrid, client) {
  const pair = await crypto.subtle.generateKey(
    { name: "RSA-OAEP", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" },
    true,
    ["encrypt", "decrypt"],
  );
  const { n, e } = await crypto.subtle.exportKey("jwk", pair.publicKey);
  const jwk = { kty: "RSA", n, e };
  const kid = await hybrid.jwkThumbprint(jwk);
  // The client's internals: there is no public way to make it use a key the server lacks.
  const record = { kid, jwk, enc: true, sig: false, pem: await hybrid.jwkToPem(jwk) };
  client._keys.set(kid, record);
  if (client.format === "envelope") {
    client._envelopeKey = record;
    if (client.jsencrypt) client.jsencrypt.setPublicKey(record.pem);
  } else {
    client._currentKid = kid;
  }
}

/** End the client's session on the server and keep using it: the server refuses invalid_session. */
async function endTheSession(client) {
  const session = client._session;
  await client.close();
  client._closed = false;
  client._session = session;
}

/**
 * Connect (format, baseUrl, jsencrypt, encryptResponse as in HybridClient.connect) and POST one
 * order to /api/order. With `provoke`, first arrange for the server itself to refuse the order
 * once (unknown_key for J and E, invalid_session for S), which the client must verify and retry.
 */
export async function placeOrder(hybrid, { baseUrl, format, jsencrypt, encryptResponse = true, provoke = false }) {
  const sent = [];
  const exchanges = [];
  const fetchImpl = (url, init) => {
    sent.push(`${init.method ?? "GET"} ${new URL(url).pathname}`);
    return fetch(url, init);
  };
  const onExchange = (ex) =>
    exchanges.push({ kind: ex.kind, status: ex.status, signature: ex.signature, error: ex.error && ex.error.code });
  const order = { format, item: "Volumetric infusion pump", quantity: 1 };
  try {
    const client = await hybrid.HybridClient.connect({ format, baseUrl, jsencrypt, encryptResponse, fetchImpl, onExchange });
    if (provoke) await (format === "session" ? endTheSession(client) : encryptToAnUnknownKey(hybrid, client));
    const res = await client.fetch("/api/order", { method: "POST", body: order });
    return { ok: true, status: res.status, body: await res.json(), sent, exchanges };
  } catch (err) {
    return {
      ok: false,
      name: err && err.name ? err.name : String(err),
      code: err && err.code !== undefined ? err.code : null,
      status: err && err.status !== undefined ? err.status : 0,
      message: String(err && err.message ? err.message : err),
      sent,
      exchanges,
    };
  }
}
