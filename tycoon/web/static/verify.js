// Tycoon envelope verification in the browser (docs/protocol.md §1-§5, docs/dashboard.md).
// Sign the exact bytes, verify BEFORE decoding, then check fields, subject, freshness,
// replay and the signer pinned for the subject. Needs tweetnacl (nacl) and @msgpack/msgpack
// (MessagePack): globals in the browser, require() under node (tests/test_web.py).
(function (root, factory) {
  if (typeof module === "object" && module.exports) {
    module.exports = factory(require("./vendor/nacl-fast.min.js"),
      require("./vendor/msgpack.min.js"));
  } else {
    root.TycoonVerify = factory(root.nacl, root.MessagePack);
  }
})(typeof self !== "undefined" ? self : this, function (nacl, MessagePack) {
  "use strict";
  const KINDS = new Set(["agent.done", "agent.plan", "agent.rebid", "agent.settled",
    "agent.warning", "alloc", "bank.balance", "bank.close", "bank.history", "bank.info",
    "bank.mint", "bank.open", "bank.receipt", "bank.settled", "bank.transfer",
    "broker.enroll", "broker.status", "demo.echo", "error", "host.account", "host.bid",
    "host.fund", "host.refund", "host.status", "price", "reply", "sls.history", "sls.host",
    "sls.query", "sls.snapshot"]);
  const HEADER = 35, SIG = 64, MAX_SIZE = 1024 * 1024, MAX_DEPTH = 16;
  const WINDOW_NS = 60n * 1000000000n;
  const B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

  class Refused extends Error {
    constructor(code, message) { super(message); this.code = code; }
  }

  // ---- base32, crc16 (nkeys), sha256 -------------------------------------------------
  function b32encode(bytes) {
    let out = "", bits = 0, value = 0;
    for (const b of bytes) {
      value = (value << 8) | b; bits += 8;
      while (bits >= 5) { out += B32[(value >>> (bits - 5)) & 31]; bits -= 5; }
    }
    if (bits > 0) out += B32[(value << (5 - bits)) & 31];
    return out;
  }
  function b32decode(text) {
    const out = []; let bits = 0, value = 0;
    for (const c of text) {
      const i = B32.indexOf(c);
      if (i < 0) throw new Refused("malformed", "not base32");
      value = (value << 5) | i; bits += 5;
      if (bits >= 8) { out.push((value >>> (bits - 8)) & 255); bits -= 8; }
    }
    return Uint8Array.from(out);
  }
  function crc16(bytes) {  // crc16-xmodem, as the nkeys libraries
    let crc = 0;
    for (const b of bytes) {
      crc ^= b << 8;
      for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
    return crc;
  }
  const K = new Uint32Array([0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b,
    0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6,
    0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d,
    0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85,
    0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585,
    0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa,
    0xa4506ceb, 0xbef9a3f7, 0xc67178f2]);
  function sha256(data) {  // a small synchronous SHA-256 (crypto.subtle is async)
    const len = data.length, padded = new Uint8Array(((len + 9 + 63) >> 6) << 6);
    padded.set(data); padded[len] = 0x80;
    const dv = new DataView(padded.buffer);
    dv.setUint32(padded.length - 4, (len * 8) >>> 0); dv.setUint32(padded.length - 8, Math.floor(len / 0x20000000));
    const h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f,
      0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
    const w = new Uint32Array(64), rotr = (x, n) => (x >>> n) | (x << (32 - n));
    for (let off = 0; off < padded.length; off += 64) {
      for (let i = 0; i < 16; i++) w[i] = dv.getUint32(off + 4 * i);
      for (let i = 16; i < 64; i++) {
        const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
        const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
        w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
      }
      let [a, b, c, d, e, f, g, hh] = h;
      for (let i = 0; i < 64; i++) {
        const t1 = (hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) >>> 0;
        const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
        hh = g; g = f; f = e; e = (d + t1) >>> 0; d = c; c = b; b = a; a = (t1 + t2) >>> 0;
      }
      const v = [a, b, c, d, e, f, g, hh];
      for (let i = 0; i < 8; i++) h[i] = (h[i] + v[i]) >>> 0;
    }
    const out = new Uint8Array(32), odv = new DataView(out.buffer);
    for (let i = 0; i < 8; i++) odv.setUint32(4 * i, h[i]);
    return out;
  }
  const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

  // ---- keys ----------------------------------------------------------------------------
  function publicKeyFromRaw(raw) {  // "U…" nkey of a raw 32-byte Ed25519 key
    const data = new Uint8Array(35); data[0] = 0xa0; data.set(raw, 1);
    const crc = crc16(data.subarray(0, 33)); data[33] = crc & 255; data[34] = crc >> 8;
    return b32encode(data);
  }
  function decodePublicKey(text) {  // raw 32 bytes of a "U…" nkey, checksum checked
    if (typeof text !== "string" || text.length !== 56 || text[0] !== "U") throw new Refused("malformed", "not a user public nkey");
    const data = b32decode(text);
    if (data.length !== 35 || data[0] !== 0xa0) throw new Refused("malformed", "not a user public nkey");
    if (crc16(data.subarray(0, 33)) !== (data[33] | (data[34] << 8))) throw new Refused("malformed", "bad nkey checksum");
    return data.slice(1, 33);
  }
  function seedKeyPair(seed) {  // the Ed25519 key pair of an "SU…" nkey seed
    const data = b32decode(seed.trim());
    if (data.length !== 36 || data[0] !== 0x95 || data[1] !== 0x00) throw new Refused("malformed", "not a user seed");
    if (crc16(data.subarray(0, 34)) !== (data[34] | (data[35] << 8))) throw new Refused("malformed", "bad seed checksum");
    return nacl.sign.keyPair.fromSeed(data.slice(2, 34));
  }
  const ids = new Map();
  function subjectIdOfRaw(raw) {  // lowercase base32 of sha256(raw key)[0:10]
    const k = hex(raw);
    let id = ids.get(k);
    if (id === undefined) {
      id = b32encode(sha256(raw).subarray(0, 10)).toLowerCase();
      if (ids.size > 4096) ids.clear();
      ids.set(k, id);
    }
    return id;
  }
  const subjectId = (publicKey) => subjectIdOfRaw(decodePublicKey(publicKey));

  // ---- the envelope --------------------------------------------------------------------
  function checkValues(value, depth) {  // containers only count; no extension types
    if (Array.isArray(value) || (value !== null && typeof value === "object" && !(value instanceof Uint8Array))) {
      if (!Array.isArray(value) && Object.getPrototypeOf(value) !== Object.prototype) {
        throw new Refused("malformed", "extension types are not allowed");
      }
      if (depth > MAX_DEPTH) throw new Refused("too_deep", "nesting deeper than the limit");
      for (const child of Array.isArray(value) ? value : Object.values(value)) checkValues(child, depth + 1);
    }
  }
  const decoder = new MessagePack.Decoder({
    useBigInt64: true, maxStrLength: 64 * 1024, maxBinLength: MAX_SIZE,
    maxArrayLength: 100000, maxMapLength: 100000, maxExtLength: 0,
    mapKeyConverter: (key) => {
      if (typeof key !== "string") throw new Refused("malformed", "map keys must be strings");
      return key;
    },
  });
  const isInt = (v) => typeof v === "bigint" || (typeof v === "number" && Number.isSafeInteger(v));

  // open(raw) -> {kind, subject, answers, sender, senderRaw, ts_ns, nonce, body, raw}
  // or throws Refused: steps 1-5 of docs/protocol.md §3.
  function open(raw, maxSize = MAX_SIZE) {
    if (!(raw instanceof Uint8Array)) throw new Refused("malformed", "an envelope is bytes");
    if (raw.length > maxSize) throw new Refused("too_large", `${raw.length} bytes > limit ${maxSize}`);
    if (raw.length < HEADER + 1 + SIG || raw[0] !== 0x54 || raw[1] !== 0x59) throw new Refused("malformed", "bad magic or too short");
    if (raw[2] !== 1) throw new Refused("bad_version", `version ${raw[2]}`);
    const senderRaw = raw.subarray(3, HEADER);
    const signed = raw.subarray(0, raw.length - SIG), signature = raw.subarray(raw.length - SIG);
    if (!nacl.sign.detached.verify(signed, signature, senderRaw)) {
      throw new Refused("bad_signature", "signature does not verify for the sender's key");
    }
    // Only now is anything decoded.
    let payload;
    try {
      payload = decoder.decode(raw.subarray(HEADER, raw.length - SIG));
    } catch (e) {
      if (e instanceof Refused) throw e;
      throw new Refused("malformed", "payload is not valid msgpack: " + e.message);
    }
    checkValues(payload, 1);
    if (!Array.isArray(payload) || payload.length !== 6) throw new Refused("malformed", "payload must be an array of 6 fields");
    const [kind, subject, answers, ts, nonce, body] = payload;
    if (typeof kind !== "string") throw new Refused("malformed", "kind must be a string");
    if (!KINDS.has(kind)) throw new Refused("unknown_kind", "unknown kind " + kind.slice(0, 64));
    if (typeof subject !== "string" || [...subject].length > 256) throw new Refused("malformed", "bad subject");
    if (!(answers instanceof Uint8Array) || (answers.length !== 0 && answers.length !== 32)) throw new Refused("malformed", "bad answers");
    if ((answers.length > 0) === (subject.length > 0)) throw new Refused("malformed", "exactly one of subject and answers must be set");
    if (!isInt(ts) || BigInt(ts) < 0n || BigInt(ts) >= 2n ** 63n) throw new Refused("malformed", "bad timestamp");
    if (!(nonce instanceof Uint8Array) || nonce.length !== 16) throw new Refused("malformed", "nonce must be 16 bytes");
    if (body === null || typeof body !== "object" || Array.isArray(body) || body instanceof Uint8Array) throw new Refused("malformed", "body must be a map with string keys");
    return { kind, subject, answers, ts_ns: BigInt(ts), nonce, body, raw, senderRaw: senderRaw.slice(), sender: publicKeyFromRaw(senderRaw) };
  }

  // A live-traffic receiver: step 6 (subject, freshness, replay) plus signer pinning.
  class Receiver {
    constructor(bankKey, windowNs = WINDOW_NS) {
      this.bankRaw = bankKey ? decodePublicKey(bankKey) : null;
      this.windowNs = windowNs;
      this.seen = new Map();  // "sender/nonce" -> ts_ns, kept while it could be fresh
      this.floor = -1n;  // a full cache refuses what is not newer than it evicted fresh
      this.stored = new Map();  // host id -> ts_ns of its newest accepted stored update
    }
    // acceptStored(raw, host, nowNs) -> message, or throws Refused: one stored price
    // envelope of `host` (the page's history, docs/dashboard.md), oldest first. Stored
    // messages are old by nature, so there is no age limit; instead: the exact bytes and
    // signature (open), the subject binding (signed for tycoon.price.<host>), the signer
    // and body pinned to that host, nothing from the future (beyond the window), and
    // timestamps that strictly rise per host, so a server can omit or cut the history but
    // not replay, reorder or repeat a signed update in it.
    acceptStored(raw, host, nowNs) {
      const msg = open(raw), subject = "tycoon.price." + host;
      if (msg.subject !== subject) throw new Refused("wrong_subject", "signed for " + msg.subject.slice(0, 80) + ", not " + subject);
      if (msg.ts_ns - nowNs > this.windowNs) throw new Refused("stale", "a stored update from the future");
      this.pin(msg);
      const last = this.stored.get(host);
      if (last !== undefined && msg.ts_ns <= last) throw new Refused("stale", "not newer than the host's previous stored update");
      this.stored.set(host, msg.ts_ns);
      return msg;
    }
    // accept(raw, receivedOn, nowNs) -> message, or throws Refused
    accept(raw, receivedOn, nowNs) {
      const msg = open(raw);
      if (msg.subject !== receivedOn) throw new Refused("wrong_subject", "signed for " + msg.subject.slice(0, 80));
      const age = nowNs - msg.ts_ns;
      if (age > this.windowNs || -age > this.windowNs) throw new Refused("stale", "outside the freshness window");
      this.pin(msg);
      const key = hex(msg.senderRaw) + "/" + hex(msg.nonce);
      if (this.seen.has(key)) throw new Refused("replayed", "already seen");
      if (msg.ts_ns <= this.floor) throw new Refused("stale", "not newer than an evicted message");
      for (const [k, ts] of this.seen) {  // insertion order: drop what can no longer pass
        if (this.seen.size < 100000 && nowNs - ts <= this.windowNs) break;
        if (nowNs - ts <= this.windowNs && ts > this.floor) this.floor = ts;  // evicted while fresh
        this.seen.delete(k);
      }
      this.seen.set(key, msg.ts_ns);
      return msg;
    }
    pin(msg) {  // docs/protocol.md "Whose key signs what"
      const parts = msg.subject.split("."), signer = subjectIdOfRaw(msg.senderRaw);
      const refuse = (why) => { throw new Refused("forbidden", why); };
      if (parts[1] === "price" || parts[1] === "alloc") {
        if (parts.length !== 3 || msg.kind !== parts[1]) refuse("a " + msg.kind + " on " + parts[1]);
        if (signer !== parts[2]) refuse("not signed by the key of host " + parts[2]);
        if (msg.body.host !== parts[2]) refuse("body host is not the subject's host");
      } else if (msg.subject === "tycoon.bank.settled") {
        if (msg.kind !== "bank.settled") refuse("not a bank.settled");
        if (!this.bankRaw || hex(msg.senderRaw) !== hex(this.bankRaw)) refuse("not signed by the bank's key");
      } else if (parts[1] === "agent") {
        if (parts.length !== 4 || msg.kind !== "agent." + parts[3]) refuse("not an agent event");
        if (signer !== parts[2]) refuse("not signed by the key of agent " + parts[2]);
      } else if (msg.subject === "tycoon.sls.snapshot") {
        if (msg.kind !== "sls.snapshot") refuse("not an sls.snapshot");
      } else {
        refuse("not a public feed");
      }
      return msg;
    }
    // The bank receipts inside a verified bank.settled: durable tokens (§7), each
    // signed by the bank for tycoon.bank.receipt. Returns [receipts, refused count].
    receipts(settled) {
      const out = []; let refused = 0;
      for (const raw of Array.isArray(settled.body.receipts) ? settled.body.receipts : []) {
        try {
          const r = open(raw);
          if (r.kind !== "bank.receipt" || r.subject !== "tycoon.bank.receipt") throw new Refused("malformed", "not a receipt");
          if (hex(r.senderRaw) !== hex(this.bankRaw)) throw new Refused("forbidden", "receipt not signed by the bank");
          if (!isInt(r.body.amount) || typeof r.body.payer !== "string" || typeof r.body.payee !== "string") throw new Refused("malformed", "bad receipt body");
          out.push(r);
        } catch (e) {
          if (!(e instanceof Refused)) throw e;
          refused += 1;
        }
      }
      return [out, refused];
    }
  }

  return { Refused, Receiver, open, sha256, hex, b32encode, b32decode, crc16, publicKeyFromRaw,
    decodePublicKey, seedKeyPair, subjectId, subjectIdOfRaw, KINDS };
});
