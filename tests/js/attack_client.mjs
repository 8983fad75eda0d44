// Node runner of attack_driver.mjs for tests/test_attack_browser.py: places one order through
// hybrid.js and prints the outcome as JSON on stdout.
//
//   node tests/js/attack_client.mjs '{"baseUrl": "http://127.0.0.1:8000", "format": "jwe"}'

import { createRequire } from "node:module";

import * as hybrid from "../../flask_hybrid/static/hybrid.js";
import { placeOrder } from "./attack_driver.mjs";

const JSEncrypt = createRequire(import.meta.url)("jsencrypt"); // the CJS build loads in Node

const options = JSON.parse(process.argv[2] ?? "{}");
const jsencrypt = options.format === "envelope" && options.jsencrypt !== false ? new JSEncrypt() : undefined;
const result = await placeOrder(hybrid, { ...options, jsencrypt });
process.stdout.write(JSON.stringify(result));
