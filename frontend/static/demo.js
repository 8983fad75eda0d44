// The flask-hybrid demo page. Everything goes through the browser module's public API
// (HybridClient.connect / fetch / close, onExchange, beforeSend, lastExchange); this file does no
// cryptography itself: it only encodes, decodes and displays what the module sent and received.

import {
  EHBP,
  HybridClient,
  HybridError,
  b64decode,
  bytesToHex,
  b64encode,
  b64urlDecode,
  b64urlEncode,
  utf8Decode,
  utf8Encode,
} from "flask-hybrid";

const $ = (selector) => document.querySelector(selector);

const PREFIX = document.body.dataset.hybridPrefix || "/hybrid";
const ENDPOINT = document.body.dataset.endpoint || "/api/echo";

const FORMATS = {
  jwe: { letter: "J", name: "JWE compact" },
  session: { letter: "S", name: "Session" },
  envelope: { letter: "E", name: "Envelope" },
  ehbp: { letter: "H", name: "HPKE frames (EHBP)" },
};

const SAMPLE_ORDER = {
  poNumber: "PO-2024-0187",
  issued: "2024-05-14",
  customer: {
    id: "CUST-40213",
    name: "Northwind Clinical Supplies GmbH",
    contact: "Dr. Hanna Vogel",
    email: "h.vogel@northwind-clinical.example",
    vatId: "DE284519736",
  },
  shipTo: { street: "Lindenstraße 18", city: "Freiburg im Breisgau", postalCode: "79098", country: "DE" },
  currency: "EUR",
  lines: [
    { sku: "NW-ECG-12L", description: "12-lead ECG monitor, model 3", qty: 2, unitPrice: 4890.0, total: 9780.0 },
    { sku: "NW-SPO2-10", description: "Pulse oximeter finger clip, pack of 10", qty: 15, unitPrice: 189.5, total: 2842.5 },
    { sku: "NW-INF-VP", description: "Volumetric infusion pump", qty: 4, unitPrice: 2315.0, total: 9260.0 },
    { sku: "NW-SVC-3Y", description: "Three-year on-site service plan", qty: 1, unitPrice: 3600.0, total: 3600.0 },
  ],
  subtotal: 25482.5,
  taxRate: 0.19,
  tax: 4841.68,
  total: 30324.18,
  paymentTerms: "Net 30",
};

const STATUS_TEXT = {
  200: "OK",
  201: "Created",
  204: "No Content",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  409: "Conflict",
  413: "Payload Too Large",
  415: "Unsupported Media Type",
  429: "Too Many Requests",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

const SIGNATURE_TEXT = {
  valid: "valid",
  absent: "absent",
  "not-needed": "not needed (sealed: AEAD-authenticated)",
  unchecked: "signed, not checked by the client",
  invalid: "INVALID",
};

/**
 * The signature status to show for an exchange: the module's, except that an answer it reports as
 * "absent" although it carries a signature is shown as signed and unchecked, never as unsigned.
 */
function signatureStatus(ex) {
  if (ex.signature !== "absent") return ex.signature;
  const headers = ex.responseHeaders;
  return "signature" in headers || "x-response-signature" in headers ? "unchecked" : "absent";
}

// ---- State ------------------------------------------------------------------------------------

let client = null;
let tamperArmed = false; // the next request gets one ciphertext byte flipped (beforeSend)
let lastTamper = null; // what the hook flipped in the request being sent
let requestExchange = null; // the "request" ExchangeInfo of the fetch in flight
let handshakeExchange = null;
let busy = false;
const exchanges = [];

// ---- Small DOM helpers ------------------------------------------------------------------------

function el(tag, className, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function placeholder(text) {
  return el("p", "placeholder", text);
}

const byteLength = (text) => (text === null || text === undefined ? 0 : utf8Encode(text).length);
const fmtBytes = (n) => `${n.toLocaleString("en-US")} B`;
const statusLine = (status) => `${status} ${STATUS_TEXT[status] ?? ""}`.trim();

function shorten(value, head = 44, tail = 12) {
  return value.length > head + tail + 3 ? `${value.slice(0, head)}…${value.slice(-tail)}` : value;
}

/** JSON text with object members sorted, to compare two values whatever their key order. */
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

function tryJson(text) {
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch {
    return { ok: false, value: undefined };
  }
}

// ---- JSON as it was sent ----------------------------------------------------------------------
// A JS object does not keep what the page must show as sent: it puts integer-like members ("2",
// "10") first, keeps one of two equal names, and rewrites numbers (4890.0 becomes 4890, and
// 18446744073709551617 loses digits). The page therefore sends and shows the text's own tokens,
// in the text's order:
// {kind: "object", members: [[name, node], ...]}, {kind: "array", items: [node, ...]},
// {kind: "string", value}, {kind: "number" | "literal", raw}.

/** The token tree of `text`; throws SyntaxError (from JSON.parse) when it is not JSON. */
function parseJsonTree(text) {
  JSON.parse(text); // the browser's own parser decides what is JSON; below, the text is valid
  let at = 0;
  const skipSpace = () => {
    while (at < text.length && " \t\n\r".includes(text[at])) at += 1;
  };
  const string = () => {
    const start = at;
    at += 1;
    while (text[at] !== '"') at += text[at] === "\\" ? 2 : 1;
    at += 1;
    return JSON.parse(text.slice(start, at));
  };
  const node = () => {
    skipSpace();
    const first = text[at];
    if (first === "{" || first === "[") {
      const isObject = first === "{";
      const children = [];
      at += 1;
      skipSpace();
      if (text[at] !== (isObject ? "}" : "]")) {
        for (;;) {
          if (isObject) {
            skipSpace();
            const name = string();
            skipSpace();
            at += 1; // the colon
            children.push([name, node()]);
          } else {
            children.push(node());
          }
          skipSpace();
          if (text[at] !== ",") break;
          at += 1;
        }
      }
      at += 1; // the closing bracket
      return isObject ? { kind: "object", members: children } : { kind: "array", items: children };
    }
    if (first === '"') return { kind: "string", value: string() };
    const start = at;
    while (at < text.length && !" \t\n\r,]}".includes(text[at])) at += 1;
    const raw = text.slice(start, at);
    return { kind: /^[-\d]/.test(raw) ? "number" : "literal", raw };
  };
  return node();
}

/** `{ok, tree}`: the token tree of `text`, or ok false when it is not JSON (or nests too deep). */
function tryJsonTree(text) {
  try {
    return { ok: true, tree: parseJsonTree(text) };
  } catch {
    return { ok: false, tree: null };
  }
}

/** The tree as compact JSON text: the members in their order, numbers with their digits. */
function compactJson(tree) {
  switch (tree.kind) {
    case "object":
      return `{${tree.members.map(([name, item]) => `${JSON.stringify(name)}:${compactJson(item)}`).join(",")}}`;
    case "array":
      return `[${tree.items.map(compactJson).join(",")}]`;
    case "string":
      return JSON.stringify(tree.value);
    default:
      return tree.raw;
  }
}

/**
 * A JSON token tree pretty-printed and syntax-coloured as DOM nodes (never innerHTML), members
 * in their order. `mark` highlights characters [start, end) of the string value of top-level
 * member `mark.key`.
 */
function jsonFragment(tree, mark = null) {
  const frag = document.createDocumentFragment();
  const put = (text, cls) => frag.append(cls ? el("span", cls, text) : text);
  const walk = (node, depth, topKey) => {
    const pad = "  ".repeat(depth);
    if (node.kind === "array" || node.kind === "object") {
      const isObject = node.kind === "object";
      const children = isObject ? node.members : node.items;
      const [open, close] = isObject ? ["{", "}"] : ["[", "]"];
      if (children.length === 0) return put(open + close, "j-punct");
      put(open, "j-punct");
      put("\n");
      children.forEach((child, i) => {
        put(pad + "  ");
        if (isObject) {
          put(JSON.stringify(child[0]), "j-key");
          put(": ");
          walk(child[1], depth + 1, depth === 0 ? child[0] : null);
        } else {
          walk(child, depth + 1, null);
        }
        put(i < children.length - 1 ? ",\n" : "\n");
      });
      put(pad);
      return put(close, "j-punct");
    }
    if (node.kind === "string") {
      const s = JSON.stringify(node.value);
      if (mark && topKey === mark.key) {
        const a = mark.start + 1;
        const b = Math.min(mark.end + 1, s.length - 1);
        put(s.slice(0, a), "j-str");
        frag.append(el("mark", "flip", s.slice(a, b)));
        return put(s.slice(b), "j-str");
      }
      return put(s, "j-str");
    }
    if (node.kind === "number") return put(node.raw, "j-num");
    return put(node.raw, node.raw === "null" ? "j-null" : "j-bool");
  };
  walk(tree, 0, null);
  return frag;
}

function codeBlock(content, extra = "") {
  const pre = el("pre", `code ${extra}`.trim());
  pre.append(content);
  return pre;
}

function rawDetails(text, label, { jwe = false } = {}) {
  let content = text;
  if (jwe) {
    // A JWE compact, its five segments coloured as above (the text is unchanged).
    content = document.createDocumentFragment();
    text.split(".").forEach((part, i) => {
      if (i > 0) content.append(el("span", "dot", "."));
      content.append(el("span", `seg-${i}`, part));
    });
  }
  return el(
    "details",
    "raw",
    el("summary", null, `${label} (${fmtBytes(byteLength(text))})`),
    codeBlock(content, "code-raw"),
  );
}

function headerList(headers, names = null) {
  const dl = el("dl", "headers");
  const keys = names ? names.filter((n) => n in headers) : Object.keys(headers).sort();
  for (const name of keys) {
    let value = headers[name];
    const full = value;
    if (name === "authorization") value = `Bearer ${shorten(value.replace(/^Bearer\s+/i, ""), 24, 8)}`;
    else value = shorten(value, 52, 10);
    const dd = el("dd", null, value);
    if (value !== full) dd.title = full;
    dl.append(el("div", null, el("dt", null, name), dd));
  }
  return dl;
}

// ---- Wire rendering ---------------------------------------------------------------------------

const JWE_REQUEST_SEGMENTS = [
  ["Protected header", "authenticated as AAD: method, path, time and one-time id are bound to the ciphertext"],
  ["Encrypted key", "the AES-256 content key, RSA-OAEP-256-wrapped to the server's identity key"],
  ["Initialization vector", "12 random bytes"],
  ["Ciphertext", "the request body, AES-256-GCM"],
  ["Authentication tag", "changing any byte of header, IV or ciphertext breaks it"],
];
const JWE_RESPONSE_SEGMENTS = [
  ["Protected header", "status and content type, bound to the request's jti (req)"],
  ["Encrypted key", "empty: alg \"dir\" seals the answer under the request's own content key"],
  ["Initialization vector", "12 fresh random bytes"],
  ["Ciphertext", "the view's answer, AES-256-GCM"],
  ["Authentication tag", "checked before the page reads a single byte"],
];

function decodedLength(segment) {
  try {
    return b64urlDecode(segment).length;
  } catch {
    return null;
  }
}

/** A JWE compact split into its five segments, the protected header decoded. */
function jweView(compact, labels, mark = null) {
  const parts = compact.split(".");
  if (parts.length !== 5) return codeBlock(compact, "code-raw");
  const list = el("ol", "jwe");
  parts.forEach((part, i) => {
    const [title, note] = labels[i];
    const n = decodedLength(part);
    const meta = part === "" ? "empty" : n === null ? `${part.length} chars` : fmtBytes(n);
    const value = el("code", "seg-value");
    if (part === "") value.append(el("span", "seg-empty", "(empty)"));
    else if (mark && mark.segment === i) {
      value.append(part.slice(0, mark.start), el("mark", "flip", part.slice(mark.start, mark.end)), part.slice(mark.end));
    } else value.append(part);
    const item = el(
      "li",
      `seg seg-${i}`,
      el("div", "seg-head", el("span", "seg-title", `${i + 1} · ${title}`), el("span", "seg-meta", meta)),
      el("div", "seg-note", note),
      value,
    );
    if (i === 0) {
      try {
        const header = parseJsonTree(utf8Decode(b64urlDecode(part)));
        item.append(el("div", "seg-decoded-label", "decoded"), codeBlock(jsonFragment(header), "code-header"));
      } catch {
        item.append(el("div", "seg-note", "(not decodable)"));
      }
    }
    list.append(item);
  });
  return list;
}

const ENVELOPE_NOTES = {
  session: [
    ["encryptedAesKey", "AES-256 content key, RSA-OAEP-256-wrapped to this session's own public key"],
    ["encryptedData", "the request body, AES-256-GCM"],
    ["iv", "12 random bytes"],
    ["authTag", "16-byte GCM tag"],
  ],
  envelope: [
    ["alg", "key wrapping + content encryption"],
    ["ek", "the content key wrapped to the server's identity key"],
    ["iv", "12 random bytes"],
    ["ct", "the request body, AES-256-GCM, followed by its 16-byte tag"],
    ["kid", "which identity key to unwrap with"],
  ],
};

const EK_NOTES = {
  "RSA+AES-GCM": "JSEncrypt's RSA PKCS#1 v1.5 encryption of base64(content key), to the server's identity key",
  "RSA-OAEP-256+AES-GCM": "Web Crypto's RSA-OAEP-256 encryption of the raw 32-byte content key, to the server's identity key",
};

function legend(notes, present) {
  const ul = el("ul", "legend");
  for (const [key, note] of notes) {
    if (!(key in present)) continue;
    const text = key === "ek" ? (EK_NOTES[present.alg] ?? note) : note;
    ul.append(el("li", null, el("code", null, key), ` ${text}`));
  }
  return ul;
}

function renderWireRequest(ex) {
  const box = $("#wire-request");
  box.replaceChildren();
  const path = new URL(ex.url).pathname + new URL(ex.url).search;
  box.append(
    el(
      "div",
      "wire-line",
      el("span", "method", ex.method),
      el("span", "wire-url", path),
      el("span", "wire-meta", ex.requestBody === null ? "no body" : fmtBytes(byteLength(ex.requestBody))),
    ),
    headerList(ex.requestHeaders),
  );
  if (ex.requestBody === null) return;
  const tamper = lastTamper;
  if (tamper) {
    box.append(
      el(
        "p",
        "tamper-note",
        el("strong", null, "Tampered in transit: "),
        `byte ${tamper.index} of ${tamper.field} flipped (0x${hex(tamper.before)} → 0x${hex(tamper.after)}), highlighted below.`,
      ),
    );
  }
  if (ex.format === "jwe") {
    box.append(
      jweView(ex.requestBody, JWE_REQUEST_SEGMENTS, tamper && { segment: 3, start: tamper.start, end: tamper.end }),
      rawDetails(ex.requestBody, "Exact body as sent", { jwe: true }),
    );
    return;
  }
  const parsed = tryJson(ex.requestBody);
  const tree = tryJsonTree(ex.requestBody);
  if (!parsed.ok || !tree.ok) {
    box.append(codeBlock(ex.requestBody, "code-raw"));
    return;
  }
  box.append(
    codeBlock(jsonFragment(tree.tree, tamper && { key: tamper.field, start: tamper.start, end: tamper.end })),
    legend(ENVELOPE_NOTES[ex.format], parsed.value),
    rawDetails(ex.requestBody, "Exact body as sent"),
  );
}

const RESPONSE_HEADER_ORDER = [
  "content-type",
  "content-length",
  "x-encryption-enabled",
  "x-plaintext-content-type",
  "content-digest",
  "signature-input",
  "signature",
  "x-response-signature",
  "x-response-signature-kid",
  "retry-after",
];

function renderWireResponse(ex, refusal) {
  const box = $("#wire-response");
  box.replaceChildren();
  const type = ex.responseHeaders["content-type"] ?? "";
  box.append(
    el(
      "div",
      "wire-line",
      el("span", `status-code ${ex.status >= 400 ? "is-bad" : "is-ok"}`, String(ex.status)),
      el("span", "wire-url", STATUS_TEXT[ex.status] ?? ""),
      el("span", "wire-meta", fmtBytes(byteLength(ex.responseBody))),
    ),
    headerList(ex.responseHeaders, RESPONSE_HEADER_ORDER),
  );
  if (refusal) {
    box.append(
      el(
        "p",
        "wire-explain is-refusal",
        "A refusal by flask-hybrid itself: plain JSON, the same bytes for every cause, no request data, signed by the server.",
      ),
      codeBlock(ex.responseBody, "code-raw code-refusal"),
    );
    return;
  }
  if (/^application\/jose/i.test(type)) {
    box.append(
      jweView(ex.responseBody, JWE_RESPONSE_SEGMENTS),
      rawDetails(ex.responseBody, "Exact body as received", { jwe: true }),
    );
    return;
  }
  const parsed = tryJsonTree(ex.responseBody);
  if (!ex.sealed) {
    box.append(
      el(
        "p",
        "wire-explain is-clear",
        "Not sealed: this answer travels in clear. Its signature proves it came from the server, but anyone on the path can read it.",
      ),
    );
  }
  if (parsed.ok) {
    box.append(codeBlock(jsonFragment(parsed.tree)), rawDetails(ex.responseBody, "Exact body as received"));
  } else {
    box.append(codeBlock(ex.responseBody || "(empty)", "code-raw"));
  }
}

// ---- Format H (EHBP) wire rendering -----------------------------------------------------------

const FRAMES_SHOWN = 6;

/** Hex of `bytes`, in groups of 4 bytes, 32 bytes a line. */
function hexDump(bytes) {
  const lines = [];
  for (let at = 0; at < bytes.length; at += 32) {
    const line = bytesToHex(bytes.subarray(at, at + 32)).replace(/(.{8})(?=.)/g, "$1 ");
    lines.push(`${at.toString(16).padStart(4, "0")}  ${line}`);
  }
  return lines.join("\n");
}

/**
 * The frames of an EHBP body: each one's 4-byte length prefix and ciphertext size, with the
 * first bytes of the ones that fall in `head` (the first bytes on the wire).
 */
function framesView(frames, head, { keyTitle, keyValue, keyNote }) {
  const list = el("ol", "jwe frames");
  if (keyValue) {
    list.append(
      el(
        "li",
        "seg seg-1 frame-key",
        el("div", "seg-head", el("span", "seg-title", keyTitle), el("span", "seg-meta", "32 bytes, header")),
        el("div", "seg-note", keyNote),
        el("code", "seg-value", keyValue),
      ),
    );
  }
  let at = 0;
  frames.forEach((length, i) => {
    if (i < FRAMES_SHOWN) {
      const shown = head.subarray(Math.min(at + 4, head.length), Math.min(at + 4 + Math.min(length, 48), head.length));
      const item = el(
        "li",
        "seg seg-3 frame",
        el(
          "div",
          "seg-head",
          el("span", "seg-title", `Frame ${i + 1} · length 0x${length.toString(16).padStart(8, "0")}`),
          el("span", "seg-meta", `${fmtBytes(length)} = ${fmtBytes(length - 16)} + 16-byte tag`),
        ),
        el("div", "seg-note", `AES-256-GCM, nonce = base nonce XOR ${i}`),
        el("code", "seg-value", shown.length ? `${bytesToHex(shown)}${length > shown.length ? "…" : ""}` : "…"),
      );
      item.dataset.length = String(length);
      list.append(item);
    }
    at += 4 + length;
  });
  if (frames.length > FRAMES_SHOWN) list.append(el("li", "seg frame-more", `… ${frames.length - FRAMES_SHOWN} more frames`));
  return list;
}

function headDetails(head, total, label) {
  return el(
    "details",
    "raw",
    el("summary", null, `${label} (first ${fmtBytes(head.length)} of ${fmtBytes(total)}, hex)`),
    codeBlock(hexDump(head), "code-raw"),
  );
}

function renderEhbpRequest(ex) {
  const box = $("#wire-request");
  const info = ex.ehbp;
  const url = new URL(ex.url);
  box.replaceChildren(
    el(
      "div",
      "wire-line",
      el("span", "method", ex.method),
      el("span", "wire-url", url.pathname + url.search),
      el("span", "wire-meta", info.encapsulatedKey ? `${fmtBytes(info.requestWireBytes)} · ${info.requestFrames.length} frame(s)` : "no body"),
    ),
    headerList(ex.requestHeaders),
  );
  if (!info.encapsulatedKey) return;
  if (lastTamper) {
    box.append(
      el(
        "p",
        "tamper-note",
        el("strong", null, "Tampered in transit: "),
        `byte ${lastTamper.index} of the body (in ${lastTamper.field}) flipped (0x${hex(lastTamper.before)} → 0x${hex(lastTamper.after)}).`,
      ),
    );
  }
  box.append(
    framesView(info.requestFrames, info.requestHead, {
      keyTitle: "Ehbp-Encapsulated-Key",
      keyValue: info.encapsulatedKey,
      keyNote: "enc: the public half of a fresh X25519 key; HPKE derives this request's keys from it and the server's key",
    }),
    headDetails(info.requestHead, info.requestWireBytes, "Exact body as sent"),
  );
}

function renderEhbpResponse(ex) {
  const box = $("#wire-response");
  const info = ex.ehbp;
  box.replaceChildren(
    el(
      "div",
      "wire-line",
      el("span", `status-code ${ex.status >= 400 ? "is-bad" : "is-ok"}`, String(ex.status)),
      el("span", "wire-url", STATUS_TEXT[ex.status] ?? (ex.status === 422 ? "Unprocessable Content" : "")),
      el("span", "wire-meta", info.responseNonce ? `${fmtBytes(info.responseWireBytes)} · ${info.responseFrames.length} frame(s)` : fmtBytes(info.responseWireBytes)),
    ),
    headerList(ex.responseHeaders, ["content-type", "transfer-encoding", "ehbp-response-nonce", ...RESPONSE_HEADER_ORDER.slice(1)]),
  );
  if (!info.responseNonce) {
    box.append(
      el(
        "p",
        "wire-explain is-refusal",
        info.encapsulatedKey
          ? "Not sealed: a refusal by the server, in clear (EHBP refusals are not signed)."
          : "Not sealed: EHBP sends a request without a body, and its answer, as they are.",
      ),
      codeBlock(ex.responseBody || "(empty)", "code-raw code-refusal"),
    );
    return;
  }
  box.append(
    framesView(info.responseFrames, info.responseHead, {
      keyTitle: "Ehbp-Response-Nonce",
      keyValue: info.responseNonce,
      keyNote: "32 random bytes: with the request's HPKE export and enc, they derive the answer's key and base nonce",
    }),
    headDetails(info.responseHead, info.responseWireBytes, "Exact body as received"),
  );
}

// ---- App panel --------------------------------------------------------------------------------

/** `text` pretty-printed as it is: members in the order they came, numbers with their digits. */
function prettyInto(pre, text) {
  pre.replaceChildren();
  const parsed = tryJsonTree(text);
  pre.append(parsed.ok ? jsonFragment(parsed.tree) : text);
}

function renderApp(ex, answerText, refused) {
  const received = $("#app-received");
  const answer = $("#app-answer");
  const check = $("#echo-check");
  check.hidden = true;
  if (refused) {
    $("#app-answer-note").textContent = "";
    received.replaceChildren(
      el(
        "span",
        "app-nothing",
        "Nothing. flask-hybrid refused the request before the view ran; the view never saw a byte of it.",
      ),
    );
    answer.replaceChildren(el("span", "app-nothing", "No answer from the view: the refusal came from flask-hybrid (see the wire panel)."));
    return;
  }
  $("#app-answer-note").textContent = ex.sealed ? "decrypted by this page" : "as received: it was not sealed";
  prettyInto(received, ex.requestPlaintext ?? "");
  prettyInto(answer, answerText);
  const sent = tryJson(ex.requestPlaintext ?? "");
  const echoed = tryJson(answerText);
  if (sent.ok && echoed.ok && echoed.value && typeof echoed.value === "object" && "received" in echoed.value) {
    // the same value: a view is free to order the members of its answer differently
    const same = canonical(echoed.value.received) === canonical(sent.value);
    check.hidden = false;
    check.className = `check-line ${same ? "is-ok" : "is-bad"}`;
    check.textContent = same
      ? "✓ The view echoed back exactly this body: it received the order in clear, unchanged."
      : "✗ The view echoed back something else than what the page encrypted.";
  }
}

// ---- Summary ----------------------------------------------------------------------------------

function setBadge(id, value, text, tone) {
  const badge = $(id);
  badge.dataset.value = value;
  badge.className = `badge ${tone ? `tone-${tone}` : ""}`.trim();
  badge.textContent = text;
}

function renderSummary(ex, { elapsed, refused, errorCode }) {
  setBadge("#status", String(ex.status), statusLine(ex.status), ex.status >= 400 ? "bad" : "ok");
  const signature = errorCode === "invalid_signature" ? "invalid" : signatureStatus(ex);
  const tone = { valid: "ok", "not-needed": "info", absent: "neutral", unchecked: "warn", invalid: "bad" }[signature];
  setBadge("#signature", signature, SIGNATURE_TEXT[signature] ?? signature, tone);
  // RFC 9421 names its key in Signature-Input; the body-only X-Response-Signature in its own header
  const input = ex.responseHeaders["signature-input"] ?? "";
  const rfc9421 = /keyid="([^"]*)"/.exec(input);
  const kid = rfc9421 ? rfc9421[1] : ex.responseHeaders["x-response-signature-kid"];
  // The app's answers are bound by an HMAC under the request's own CEK; refusals and handshakes
  // by the server's signing key (PROTOCOL.md).
  const hmac = /alg="hmac-sha256"/.test(input);
  const scheme = !rfc9421
    ? "RSASSA-PKCS1-v1_5 SHA-256"
    : hmac
      ? "RFC 9421 · HMAC-SHA256 under this request's CEK"
      : "RFC 9421 · RSASSA-PKCS1-v1_5 SHA-256";
  $("#signature-detail").textContent =
    signature === "valid"
      ? `${scheme}${kid && !hmac ? ` · kid ${shorten(kid, 10, 4)}` : ""}`
      : signature === "not-needed"
        ? "AES-GCM tag verified"
        : "";
  if (refused) setBadge("#sealed", "refusal", ex.format === "ehbp" ? "refusal (plain)" : "refusal (plain JSON)", "bad");
  else if (ex.sealed && ex.format === "ehbp") setBadge("#sealed", "sealed", "sealed (HPKE frames, AES-256-GCM)", "ok");
  else if (ex.sealed) setBadge("#sealed", "sealed", "sealed (AES-256-GCM)", "ok");
  else setBadge("#sealed", "clear", "in clear (signed only)", "warn");
  $("#timing").textContent = `${Math.round(elapsed)} ms`;
  $("#sizes").textContent =
    ex.requestPlaintext === null
      ? ""
      : ex.ehbp
        ? `plaintext ${fmtBytes(byteLength(ex.requestPlaintext))} → wire ${fmtBytes(ex.ehbp.requestWireBytes)} in ${ex.ehbp.requestFrames.length} frame${ex.ehbp.requestFrames.length === 1 ? "" : "s"}`
        : `plaintext ${fmtBytes(byteLength(ex.requestPlaintext))} → wire ${fmtBytes(byteLength(ex.requestBody))}`;
}

function clearError() {
  const box = $("#error");
  box.hidden = true;
  box.replaceChildren();
  box.className = "alert";
}

function showError(title, lines = [], body = null, tone = "bad") {
  const box = $("#error");
  box.className = `alert alert-${tone}`;
  box.replaceChildren(el("strong", "alert-title", title));
  for (const line of lines) box.append(el("p", null, line));
  if (body !== null) box.append(el("div", "alert-label", "Exact response body"), codeBlock(body, "code-raw code-refusal"));
  box.hidden = false;
}

function describeFailure(err) {
  if (err instanceof HybridError) return `${err.code}: ${err.message}`;
  return `${err && err.name ? err.name : "Error"}: ${err && err.message ? err.message : err}`;
}

// ---- Exchange log -----------------------------------------------------------------------------

function recordExchange(ex) {
  if (ex.kind === "request") requestExchange = ex;
  if (ex.kind === "handshake") handshakeExchange = ex;
  exchanges.push({ ex, at: new Date() });
  const tbody = $("#log tbody");
  tbody.querySelector("tr.empty")?.remove();
  const url = new URL(ex.url);
  const outcome = ex.error ? `${ex.error.code}` : ex.kind === "close" ? "session ended" : "ok";
  const row = el(
    "tr",
    ex.error ? "is-bad" : null,
    el("td", "num", String(exchanges.length)),
    el("td", "mono", exchanges.at(-1).at.toLocaleTimeString("en-GB")),
    el("td", null, ex.kind),
    el("td", null, FORMATS[ex.format].letter),
    el("td", "mono", `${ex.method} ${url.pathname}`),
    el("td", "mono", String(ex.status)),
    el("td", null, ex.sealed ? "sealed" : ex.status === 204 ? "empty" : ex.error ? "refusal" : "clear"),
    el("td", null, SIGNATURE_TEXT[signatureStatus(ex)] ?? signatureStatus(ex)),
    el("td", ex.error ? "outcome-bad" : "outcome-ok", outcome),
  );
  tbody.prepend(row);
  while (tbody.rows.length > 25) tbody.deleteRow(-1);
}

// ---- Tampering (beforeSend) -------------------------------------------------------------------

const hex = (n) => n.toString(16).padStart(2, "0");

/**
 * Flip (XOR 0xff) one byte of `bytes[0..limit)`: byte 40, or the middle one of a shorter text, so
 * that the change shows in the first lines of the panel. Returns the copy and what changed.
 */
function flipOneByte(bytes, limit = bytes.length) {
  const copy = bytes.slice();
  const index = Math.min(40, Math.floor(limit / 2));
  const before = copy[index];
  copy[index] ^= 0xff;
  // In base64 (either alphabet), byte i lives in the 4 characters of group floor(i / 3).
  const start = Math.floor(index / 3) * 4;
  return { copy, index, before, after: copy[index], start, end: start + 4 };
}

/** beforeSend: when armed, flip one byte of the ciphertext of the request about to be sent. */
function beforeSend(wire) {
  lastTamper = null;
  if (tamperArmed && client.format === "ehbp" && wire.body instanceof Uint8Array) {
    // Format H: flip a byte of the first frame's ciphertext (after its 4-byte length). Kept armed
    // for the whole send: the client's one resend after a 422 is tampered with too.
    const bytes = wire.body.slice();
    const index = Math.min(4 + 40, 4 + Math.floor((bytes.length - 4) / 2));
    const before = bytes[index];
    bytes[index] ^= 0xff;
    wire.body = bytes;
    lastTamper = { index, before, after: bytes[index], field: "the first frame's ciphertext" };
    return;
  }
  if (!tamperArmed || typeof wire.body !== "string") return;
  tamperArmed = false;
  const format = client.format;
  if (format === "jwe") {
    const parts = wire.body.split(".");
    const flip = flipOneByte(b64urlDecode(parts[3]));
    parts[3] = b64urlEncode(flip.copy);
    wire.body = parts.join(".");
    lastTamper = { ...flip, field: "the ciphertext segment" };
    return;
  }
  const envelope = JSON.parse(wire.body);
  const field = format === "session" ? "encryptedData" : "ct";
  const bytes = b64decode(envelope[field]);
  // format E: ct = ciphertext || 16-byte tag; flip a byte of the ciphertext part
  const flip = flipOneByte(bytes, format === "envelope" ? bytes.length - 16 : bytes.length);
  envelope[field] = b64encode(flip.copy);
  wire.body = JSON.stringify(envelope);
  lastTamper = { ...flip, field, key: field };
}

// ---- Connect / send ---------------------------------------------------------------------------

function options() {
  return {
    format: document.querySelector('input[name="format"]:checked').value,
    wrap: document.querySelector('input[name="wrap"]:checked').value,
    seal: $("#seal-response").checked,
  };
}

function setConnection(state, text) {
  const node = $("#connection-state");
  node.dataset.state = state;
  node.textContent = text;
}

function setBusy(value) {
  busy = value;
  $("#connect").disabled = value;
  $("#send").disabled = value || client === null;
}

function resetConnectionFacts() {
  $("#conn-format").textContent = "—";
  $("#kid").textContent = "—";
  $("#kid").title = "";
  $("#session-id").textContent = "—";
  $("#handshake").textContent = "—";
}

async function disconnect() {
  const old = client;
  client = null;
  handshakeExchange = null;
  $("#send").disabled = true;
  $("#connect").textContent = "Connect";
  resetConnectionFacts();
  setConnection("disconnected", "Not connected");
  if (old) {
    try {
      await old.close(); // format S: DELETE the session; J and E: forget a reused key
    } catch {
      // the session may already be gone; nothing to tell the user
    }
  }
}

function describeKeyExchange(c, opts) {
  if (c.format === "session") {
    const h = handshakeExchange;
    if (!h) return "handshake";
    return `POST ${new URL(h.url).pathname} → ${h.status}, signature ${SIGNATURE_TEXT[h.signature]}; per-session RSA-2048 key`;
  }
  if (c.format === "jwe") return `GET ${PREFIX}/jwks.json; each request wraps a fresh AES-256 key with RSA-OAEP-256`;
  if (c.format === "ehbp") {
    return `GET ${EHBP.keysPath} (one X25519 key_config); each request: a fresh ephemeral X25519 key, HPKE base mode`;
  }
  const wrap = opts.wrap === "jsencrypt" ? "JSEncrypt PKCS#1 v1.5" : "Web Crypto RSA-OAEP-256";
  return `GET ${PREFIX}/public-key; ${wrap}; response ${opts.seal ? "sealed" : "in clear, signed"}`;
}

async function connect() {
  if (busy) return;
  const opts = options();
  setBusy(true);
  clearError();
  setConnection("connecting", "Connecting…");
  await disconnect();
  setConnection("connecting", "Connecting…");
  const config = { format: opts.format, prefix: PREFIX, onExchange: recordExchange, beforeSend };
  if (opts.format === "envelope") {
    config.encryptResponse = opts.seal;
    if (opts.wrap === "jsencrypt") {
      if (typeof window.JSEncrypt !== "function") {
        setConnection("error", "Connection failed");
        showError("JSEncrypt is not loaded", ["/static/vendor/jsencrypt.min.js did not load; choose Web Crypto OAEP instead."]);
        setBusy(false);
        return;
      }
      config.jsencrypt = new window.JSEncrypt();
    }
  }
  try {
    client = await HybridClient.connect(config);
  } catch (err) {
    client = null;
    setConnection("error", "Connection failed");
    showError("Could not connect", [describeFailure(err)]);
    setBusy(false);
    return;
  }
  const info = FORMATS[client.format];
  $("#conn-format").textContent = `${info.letter} · ${info.name}`;
  $("#kid").textContent = client.kid ? shorten(client.kid, 22, 6) : "—";
  $("#kid").title = client.kid ?? "";
  $("#session-id").textContent = client.sessionId ?? (client.format === "session" ? "—" : "none (stateless)");
  $("#handshake").textContent = describeKeyExchange(client, opts);
  setConnection("connected", `Connected · format ${info.letter}`);
  $("#connect").textContent = "Reconnect";
  setBusy(false);
}

/** Bring the result card into view (it sits below the order form) unless all of it shows. */
function revealResult() {
  const result = $("#result");
  const box = result.getBoundingClientRect();
  if (box.top >= 0 && box.bottom <= window.innerHeight) return;
  const still = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  result.scrollIntoView({ behavior: still ? "auto" : "smooth", block: "start" });
}

function finish(state) {
  const result = $("#result");
  result.dataset.state = state;
  result.dataset.seq = String(Number(result.dataset.seq) + 1);
  setBusy(false);
  revealResult();
}

/** Forget the previous request's outcome: nothing on the page may describe a request not sent. */
function clearResult() {
  for (const id of ["#status", "#signature", "#sealed"]) setBadge(id, "", "—", null);
  $("#signature-detail").textContent = "";
  $("#timing").textContent = "—";
  $("#sizes").textContent = "";
  $("#wire-request").replaceChildren(placeholder("Nothing was sent: the request body is not valid JSON."));
  $("#wire-response").replaceChildren(placeholder("No response."));
  $("#app-received").replaceChildren(el("span", "placeholder", "Nothing yet."));
  $("#app-answer").replaceChildren(el("span", "placeholder", "Nothing yet."));
  $("#app-answer-note").textContent = "";
  $("#echo-check").hidden = true;
}

async function send() {
  if (busy || !client) return;
  clearError();
  // Sent as typed (compacted): members in the editor's order, numbers with their digits.
  const parsed = tryJsonTree($("#order").value);
  if (!parsed.ok) {
    clearResult();
    showError("The request body is not valid JSON", ["Nothing was sent. Fix the purchase order, or press “Reset order”."]);
    finish("invalid");
    return;
  }
  setBusy(true);
  $("#result").dataset.state = "busy";
  tamperArmed = $("#tamper").checked;
  const tampered = tamperArmed;
  requestExchange = null;
  lastTamper = null;
  const started = performance.now();
  let response = null;
  let failure = null;
  try {
    response = await client.fetch(ENDPOINT, { method: "POST", body: compactJson(parsed.tree) });
  } catch (err) {
    failure = err;
  }
  let answerText = null;
  if (response && client.format === "ehbp") {
    // Format H: the answer's frames are opened as they are read; its exchange is complete after.
    try {
      answerText = await response.text();
    } catch (err) {
      failure = err;
      response = null;
    }
  }
  const elapsed = performance.now() - started;
  tamperArmed = false;
  $("#tamper").checked = false; // "tamper with next request": one request only
  const ex = requestExchange ?? client.lastExchange;

  if (!ex || ex.kind !== "request") {
    showError("The request could not be sent", [describeFailure(failure)]);
    finish("error");
    return;
  }
  const refused = failure instanceof HybridError && ex.error !== null && failure.status >= 400;
  if (ex.format === "ehbp") {
    renderEhbpRequest(ex);
    renderEhbpResponse(ex);
  } else {
    renderWireRequest(ex);
    renderWireResponse(ex, refused && !ex.sealed);
  }
  renderSummary(ex, { elapsed, refused, errorCode: failure instanceof HybridError ? failure.code : null });

  if (response) {
    renderApp(ex, answerText ?? (await response.text()), false);
    finish("ok");
    return;
  }
  renderApp(ex, "", true);
  if (refused) {
    const signed = ex.signature === "valid";
    const lines = [
      `${failure.message}`,
      signed
        ? "The refusal was signed, and its signature verified against the server's identity key: the page knows it really came from the server, not from something on the path."
        : "The refusal carried no signature the page could check.",
    ];
    if (ex.format === "ehbp") {
      lines[1] = "EHBP refusals are plain and unsigned: the page cannot prove this one came from the server, only that nothing was sealed to it.";
      if (failure.code === "key_config_mismatch") {
        lines.splice(
          1,
          0,
          "The server could not open the first frame under any HPKE key it holds. EHBP answers that with 422 (key configuration), since it cannot tell a tampered frame from a stale key: the page fetched the keys again and resent once, and was refused again.",
        );
      }
    }
    if (tampered && lastTamper) {
      lines.unshift(
        `You flipped byte ${lastTamper.index} of ${lastTamper.field}. AES-GCM's authentication tag no longer matches, so the server refused the request before the view ran.`,
      );
    }
    showError(`Refused by the server: ${statusLine(ex.status)} · ${failure.code}`, lines, ex.responseBody);
    finish("refused");
    return;
  }
  showError("The page rejected the response", [describeFailure(failure)]);
  finish("error");
}

// ---- Wiring -----------------------------------------------------------------------------------

function resetOrder() {
  $("#order").value = JSON.stringify(SAMPLE_ORDER, null, 2);
}

function syncFormatOptions() {
  $("#envelope-options").hidden = options().format !== "envelope";
}

function init() {
  resetOrder();
  syncFormatOptions();
  for (const input of document.querySelectorAll('input[name="format"], input[name="wrap"]')) {
    input.addEventListener("change", () => {
      syncFormatOptions();
      if (client) disconnect(); // a different format or key wrapping needs a new connection
    });
  }
  $("#seal-response").addEventListener("change", () => {
    if (client && client.format === "envelope") {
      client.encryptResponse = $("#seal-response").checked; // takes effect on the next request
      $("#handshake").textContent = describeKeyExchange(client, options());
    }
  });
  $("#connect").addEventListener("click", connect);
  $("#send").addEventListener("click", send);
  $("#reset-order").addEventListener("click", resetOrder);
  document.body.dataset.ready = "true";
}

init();
