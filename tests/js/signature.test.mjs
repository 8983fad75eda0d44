// Request-bound response signatures in hybrid.js: the strict RFC 8941 parser, RFC 9530 digests,
// and RFC 9421 verification of answers made by an independent signer (signer.mjs, Node crypto).
//
//   node --test tests/js/signature.test.mjs

import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";

import {
  HybridError,
  b64decode,
  contentDigest,
  contentDigestMatches,
  deriveAnswerKey,
  parseStructuredDictionary,
  requiredSignatureComponents,
  unverifiedResponseSignature,
  verifyResponseSignature,
} from "../../flask_hybrid/static/hybrid.js";
import { digestOf, signResponse } from "./signer.mjs";

const vectorsDir = process.env.FH_VECTORS_DIR
  ? pathToFileURL(process.env.FH_VECTORS_DIR.replace(/\/?$/, "/"))
  : new URL("../vectors/", import.meta.url);
const load = async (name) => JSON.parse(await readFile(new URL(name, vectorsDir), "utf8"));
const keys = await load("keys.json");
const workedExamples = await load("signature.json");

const isInvalidSignature = (err) => err instanceof HybridError && err.code === "invalid_signature";
const EMPTY_DIGEST = "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:";

describe("RFC 8941 dictionaries (the subset of the signature headers)", () => {
  test("inner lists with string items and parameters, as Signature-Input is", () => {
    const dict = parseStructuredDictionary(
      'hybrid=("@status" "content-digest" "@method";req);created=1764620000;keyid="k-1";alg="rsa-v1_5-sha256", other=:AAE=:;x=?0',
    );
    assert.deepEqual([...dict.keys()], ["hybrid", "other"]);
    const hybrid = dict.get("hybrid");
    assert.deepEqual(
      hybrid.value.map((item) => [item.value, [...item.params]]),
      [["@status", []], ["content-digest", []], ["@method", [["req", true]]]],
    );
    assert.deepEqual([...hybrid.params], [["created", 1764620000], ["keyid", "k-1"], ["alg", "rsa-v1_5-sha256"]]);
    assert.deepEqual([...dict.get("other").value], [0, 1]);
    assert.deepEqual([...dict.get("other").params], [["x", false]]);
  });

  test("byte sequences, tokens, bare keys, escapes, spaces around members, a repeated key overwrites", () => {
    const dict = parseStructuredDictionary(' a=:SGk=: ,\tb=tok/en:1 , c;p, d="q\\"\\\\", a=?1 ');
    assert.equal(dict.get("a").value, true, "the later a wins, in the first a's place");
    assert.deepEqual([...dict.keys()], ["a", "b", "c", "d"]);
    assert.deepEqual(dict.get("b").value, { token: "tok/en:1" });
    assert.equal(dict.get("c").value, true);
    assert.deepEqual([...dict.get("c").params], [["p", true]]);
    assert.equal(dict.get("d").value, 'q"\\');
    assert.deepEqual([...parseStructuredDictionary("x=:SGk=:").get("x").value], [72, 105]);
    assert.deepEqual(parseStructuredDictionary("e=()").get("e").value, []);
    assert.equal(parseStructuredDictionary("n=-999999999999999").get("n").value, -999999999999999);
  });

  const malformed = [
    ["empty", ""],
    ["a trailing comma", "a=1,"],
    ["an upper-case key", "A=1"],
    ["a key starting with a digit", "1a=1"],
    ["no separator between members", "a=1 b=2"],
    ["an unterminated string", 'a="abc'],
    ["a bad escape", 'a="\\n"'],
    ["a non-ASCII character in a string", 'a="é"'],
    ["a control character in a string", 'a="\t"'],
    ["unpadded base64", "a=:SGk:"],
    ["URL-safe base64", "a=:-_8=:"],
    ["an unterminated byte sequence", "a=:SGk="],
    ["a decimal", "a=1.5"],
    ["16 digits", "a=1234567890123456"],
    ["a lone minus", "a=-"],
    ["a bad boolean", "a=?2"],
    ["an unterminated inner list", 'a=("x" "y"'],
    ["items without a space", 'a=("x""y")'],
    ["a date (RFC 9651)", "a=@1659578233"],
    ["a display string (RFC 9651)", 'a=%"x"'],
    ["a nested inner list", "a=((1))"],
    ["a space before =", "a =1"],
    ["garbage after a member", "a=1;"],
  ];
  for (const [name, text] of malformed) {
    test(`refuses ${name}: ${JSON.stringify(text)}`, () => {
      assert.throws(() => parseStructuredDictionary(text), SyntaxError);
    });
  }
});

describe("RFC 9530 Content-Digest", () => {
  test("sha-256 of the body as sent; the empty body has the empty string's", async () => {
    assert.equal(await contentDigest(""), EMPTY_DIGEST);
    assert.equal(await contentDigest(null), EMPTY_DIGEST);
    assert.equal(await contentDigest('{"a":"wörld"}'), digestOf(Buffer.from('{"a":"wörld"}')));
    assert.equal(await contentDigest(new Uint8Array([1, 2, 3])), digestOf(Buffer.from([1, 2, 3])));
  });

  test("matches: sha-256 required; every sha-256 and sha-512 member checked; others ignored", async () => {
    const body = "hello";
    const sha512 = `sha-512=:${(await import("node:crypto")).createHash("sha512").update(body).digest("base64")}:`;
    assert.equal(await contentDigestMatches(digestOf(body), body), true);
    assert.equal(await contentDigestMatches(`${digestOf(body)}, ${sha512}, md5=:AAAA:`, body), true);
    assert.equal(await contentDigestMatches(sha512, body), false, "no sha-256");
    assert.equal(await contentDigestMatches(digestOf("other"), body), false);
    assert.equal(await contentDigestMatches(`${digestOf(body)}, sha-512=:AAAA:`, body), false);
    assert.equal(await contentDigestMatches("sha-256=1", body), false, "not a byte sequence");
    assert.equal(await contentDigestMatches("sha-256=:not base64:", body), false);
  });
});

describe("RFC 9421 response signatures", () => {
  const signer = keys.identity_1;
  const requestHeaders = () =>
    new Headers({ "Content-Type": "application/jose", "Content-Digest": digestOf("the request body") });
  const refusalBody = '{"error":"unknown_key","message":"The key identifier is not known; fetch the server keys and retry."}';
  /** A signed 401 to a POST with these headers, as the server (per PROTOCOL.md) would send it. */
  const signedAnswer = (overrides = {}, headers = requestHeaders(), method = "POST") => {
    const request = { method, headers };
    const { headers: sig, base } = signResponse({
      privatePem: signer.private_pem,
      kid: signer.kid,
      status: 401,
      body: refusalBody,
      request,
      created: 1764620000,
      ...overrides,
    });
    const response = {
      status: 401,
      headers: new Headers({ "Content-Type": "application/json", ...sig }),
      body: new TextEncoder().encode(refusalBody),
    };
    return { request, response, base };
  };
  const keyFor = (keyid) => (keyid === signer.kid ? signer.jwk : null);

  test("the base rebuilt by the client is the signer's; the signature verifies and names its key", async () => {
    const { request, response, base } = signedAnswer();
    const parsed = unverifiedResponseSignature({ request, response });
    assert.equal(parsed.base, base);
    assert.equal(parsed.keyid, signer.kid);
    assert.equal(parsed.created, 1764620000);
    assert.deepEqual(parsed.components, ['"@status"', '"content-digest"', '"@method";req', '"content-digest";req']);
    assert.equal(
      base,
      [
        '"@status": 401',
        `"content-digest": ${digestOf(refusalBody)}`,
        '"@method";req: POST',
        `"content-digest";req: ${digestOf("the request body")}`,
        `"@signature-params": ("@status" "content-digest" "@method";req "content-digest";req);created=1764620000;keyid="${signer.kid}";alg="rsa-v1_5-sha256";tag="flask-hybrid"`,
      ].join("\n"),
    );
    assert.equal(await verifyResponseSignature({ request, response, keyFor }), signer.kid);
    assert.equal(await verifyResponseSignature({ request, response, keyFor: () => signer.public_pem }), signer.kid);
  });

  test("required components follow the request: its digest and its key header", () => {
    assert.deepEqual(requiredSignatureComponents(new Headers()), ['"@status"', '"content-digest"', '"@method";req']);
    assert.deepEqual(requiredSignatureComponents({ "Content-Digest": EMPTY_DIGEST, "X-Encrypted-Aes-Key": "k" }), [
      '"@status"',
      '"content-digest"',
      '"@method";req',
      '"content-digest";req',
      '"x-encrypted-aes-key";req',
    ]);
  });

  test("a bodiless request's key header is covered and rebuilt from what the client sent", async () => {
    const headers = new Headers({ "Content-Digest": EMPTY_DIGEST, "X-Hybrid-JWE": "  a.b.c.d.e " });
    const { request, response } = signedAnswer({}, headers, "GET");
    assert.match(unverifiedResponseSignature({ request, response }).base, /^"x-hybrid-jwe";req: a\.b\.c\.d\.e$/m);
    await verifyResponseSignature({ request, response, keyFor });
    const other = { method: "GET", headers: new Headers({ "Content-Digest": EMPTY_DIGEST, "X-Hybrid-JWE": "f.g.h.i.j" }) };
    await assert.rejects(verifyResponseSignature({ request: other, response, keyFor }), isInvalidSignature);
  });

  test("answers bound to another request do not verify: another body, another method", async () => {
    const { response } = signedAnswer();
    const otherBody = { method: "POST", headers: new Headers({ "Content-Digest": digestOf("another request body") }) };
    await assert.rejects(verifyResponseSignature({ request: otherBody, response, keyFor }), isInvalidSignature);
    const otherMethod = { method: "PUT", headers: requestHeaders() };
    await assert.rejects(verifyResponseSignature({ request: otherMethod, response, keyFor }), isInvalidSignature);
  });

  const defects = [
    ["no signature", (a) => a.response.headers.delete("signature")],
    ["no Signature-Input", (a) => a.response.headers.delete("signature-input")],
    ["a malformed Signature-Input", (a) => a.response.headers.set("signature-input", "hybrid=(")],
    ["a signature under another label", (a) => a.response.headers.set("signature", a.response.headers.get("signature").replace("hybrid=", "sig1="))],
    ["a Signature that is no byte sequence", (a) => a.response.headers.set("signature", 'hybrid="abc"')],
    ["another status", (a) => (a.response.status = 409)],
    ["another body", (a) => (a.response.body = new TextEncoder().encode('{"error":"invalid_session"}'))],
    ["no response Content-Digest", (a) => a.response.headers.delete("content-digest")],
    ["a keyid that is not a signing key", () => {}, () => null],
  ];
  for (const [name, spoil, keys = keyFor] of defects) {
    test(`refuses ${name}`, async () => {
      const answer = signedAnswer();
      spoil(answer);
      await assert.rejects(verifyResponseSignature({ ...answer, keyFor: keys }), isInvalidSignature);
    });
  }

  const forged = [
    ["another tag", { tag: "other" }],
    ["another alg", { alg: "rsa-pss-sha512" }],
    ["no created", { created: null }],
    ["an empty keyid", { keyid: "" }],
    ["the request digest not covered", { components: ['"@status"', '"content-digest"', '"@method";req'] }],
    ["a derived component the client cannot rebuild", { components: ['"@status"', '"content-digest"', '"@method";req', '"content-digest";req', '"@authority";req'] }],
    ["a request header the client did not send", { components: ['"@status"', '"content-digest"', '"@method";req', '"content-digest";req', '"x-other";req'] }],
    ["a component covered twice", { components: ['"@status"', '"@status"', '"content-digest"', '"@method";req', '"content-digest";req'] }],
    ["@method without ;req", { components: ['"@status"', '"content-digest"', '"@method"', '"@method";req', '"content-digest";req'] }],
    ["an unsupported component parameter", { components: ['"@status"', '"content-digest";sf', '"@method";req', '"content-digest";req'] }],
    ["a signature over another status", { signedStatus: 200 }],
    ["a corrupted signature", { corrupt: true }],
  ];
  for (const [name, overrides] of forged) {
    test(`refuses a signature with ${name}`, async () => {
      const answer = signedAnswer(overrides);
      await assert.rejects(verifyResponseSignature({ ...answer, keyFor }), isInvalidSignature);
    });
  }

  test("several field lines are joined with ', ' and values are trimmed, as fetch hands them over", async () => {
    const { request, response } = signedAnswer();
    // Another signature beside ours (a CDN's, say) does not disturb the hybrid one.
    response.headers.append("signature-input", 'cdn=("@status");keyid="x"');
    response.headers.append("signature", "cdn=:AAAA:");
    assert.equal(await verifyResponseSignature({ request, response, keyFor }), signer.kid);
  });
});

describe("the worked examples (tests/vectors/signature.json)", () => {
  const hexBytes = (hex) => Uint8Array.from(Buffer.from(hex, "hex"));
  const isHmac = (example) => example.alg === "hmac-sha256";

  test("there are worked examples: a signed refusal, and HMAC-bound answers with and without a body", () => {
    assert.ok(workedExamples.length >= 3);
    assert.ok(workedExamples.some((example) => !isHmac(example) && example.response.headers["X-Hybrid-Refusal"]));
    const bound = workedExamples.filter(isHmac);
    assert.ok(bound.some((example) => example.request.headers["X-Encrypted-Aes-Key"] && example.response.body === ""));
    assert.ok(bound.some((example) => example.request.body !== "" && example.response.body.includes('"encryptedData"')));
    for (const example of bound) {
      assert.equal(example.kid, "cek");
      assert.equal(example.response.headers["X-Hybrid-Refusal"], undefined);
    }
  });

  for (const example of workedExamples) {
    const request = { method: example.request.method, headers: example.request.headers };
    const response = {
      status: example.response.status,
      headers: example.response.headers,
      body: new TextEncoder().encode(example.response.body),
    };
    /** The signing key by kid; for "hmac-sha256", the answer key of the CEK (the client's own). */
    const keyForCek = (cekBytes) => async (keyid, alg) => {
      if (alg === "hmac-sha256") return keyid === "cek" ? await deriveAnswerKey(cekBytes) : null;
      return example.key && keyid === keys[example.key].kid ? keys[example.key].jwk : null;
    };
    const cekBytes = isHmac(example) ? hexBytes(example.cek_hex) : undefined;
    const keyFor = keyForCek(cekBytes);

    test(`${example.description.slice(0, 60)}...: every step as PROTOCOL.md gives it`, async () => {
      assert.equal(await contentDigest(example.request.body), example.request.headers["Content-Digest"]);
      assert.equal(await contentDigest(example.response.body), example.response.headers["Content-Digest"]);
      const parsed = unverifiedResponseSignature({ request, response });
      assert.equal(parsed.base, example.signature_base);
      assert.equal(parsed.base.split("\n").at(-1), `"@signature-params": ${example.signature_params}`);
      assert.deepEqual(parsed.components, example.covered_components);
      assert.equal(parsed.keyid, example.kid);
      assert.equal(parsed.created, example.created);
      assert.deepEqual(parsed.signature, b64decode(example.signature_b64));
      assert.equal(await verifyResponseSignature({ request, response, keyFor }), example.kid);
    });

    test(`${example.description.slice(0, 60)}...: one thing changed does not verify`, async () => {
      /** `text` with the character at `index` (alphanumeric) replaced by another. */
      const oneByteChanged = (text, index) => {
        assert.match(text[index], /[A-Za-z0-9]/);
        return text.slice(0, index) + (text[index] === "A" ? "B" : "A") + text.slice(index + 1);
      };
      const changedBody = Uint8Array.from(response.body.length ? response.body : [0]);
      changedBody[changedBody.length - 1] ^= 1;
      const withResponseHeader = (name, value) => ({ response: { ...response, headers: { ...response.headers, [name]: value } } });
      const withRequestHeader = (name, value) => ({ request: { ...request, headers: { ...request.headers, [name]: value } } });
      const changes = [
        { response: { ...response, status: response.status + 1 } },
        { response: { ...response, body: new TextEncoder().encode(example.response.body + " ") } },
        { response: { ...response, body: changedBody } },
        withResponseHeader("Content-Digest", oneByteChanged(response.headers["Content-Digest"], 12)),
        withResponseHeader("Signature", oneByteChanged(response.headers.Signature, 20)),
        withResponseHeader("Signature-Input", response.headers["Signature-Input"].replace(`created=${example.created}`, `created=${example.created + 1}`)),
        { request: { ...request, method: request.method === "POST" ? "PUT" : "POST" } },
        withRequestHeader("Content-Digest", "sha-256=:ri43uTXI5iu4E306wvxlGT8JpR8nThqz5H+h0KZDaBA=:"),
        withRequestHeader("Content-Digest", oneByteChanged(request.headers["Content-Digest"], 12)),
      ];
      if (request.headers["X-Encrypted-Aes-Key"]) {
        changes.push(withRequestHeader("X-Encrypted-Aes-Key", oneByteChanged(request.headers["X-Encrypted-Aes-Key"], 4)));
      }
      if (response.headers["X-Hybrid-Refusal"]) {
        changes.push(withResponseHeader("X-Hybrid-Refusal", "unknown_kez"));
      }
      for (const change of changes) {
        await assert.rejects(verifyResponseSignature({ request, response, keyFor, ...change }), isInvalidSignature);
      }
    });

    if (isHmac(example)) {
      test(`${example.description.slice(0, 60)}...: the answer key of the CEK, and no other`, async () => {
        const key = await deriveAnswerKey(cekBytes);
        const signature = b64decode(example.signature_b64);
        const base = new TextEncoder().encode(example.signature_base);
        assert.equal(await crypto.subtle.verify("HMAC", key, signature, base), true, "deriveAnswerKey is answer_key_hex");
        const answerKey = await crypto.subtle.importKey("raw", hexBytes(example.answer_key_hex), { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
        assert.equal(await crypto.subtle.verify("HMAC", answerKey, signature, base), true);
        const wrongCek = Uint8Array.from(cekBytes);
        wrongCek[0] ^= 1;
        await assert.rejects(verifyResponseSignature({ request, response, keyFor: keyForCek(wrongCek) }), isInvalidSignature);
        // The signing keys cannot vouch for an HMAC binding, nor a caller that offers no key.
        const signingKeyOnly = (keyid) => (keyid === keys.identity_1.kid ? keys.identity_1.jwk : null);
        await assert.rejects(verifyResponseSignature({ request, response, keyFor: signingKeyOnly }), isInvalidSignature);
      });
    }
  }
});
