// A tiny read-only NATS client over WebSocket: INFO, CONNECT (nkey signature of the
// server's nonce), PING/PONG, SUB, MSG, -ERR. Nothing is ever published. The NATS text
// protocol: https://docs.nats.io/reference/reference-protocols/nats-protocol
(function (root) {
  "use strict";
  const enc = new TextEncoder(), dec = new TextDecoder();
  const b64url = (bytes) => btoa(String.fromCharCode(...bytes))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

  class NatsWS {
    // keyPair: tweetnacl key pair; publicKey: its "U…" nkey; onMsg(subject, bytes)
    constructor(url, publicKey, keyPair, handlers) {
      this.url = url; this.publicKey = publicKey; this.keyPair = keyPair;
      this.h = handlers; this.subs = new Map(); this.nextSid = 1;
      this.buf = new Uint8Array(0); this.ws = null; this.closed = false;
    }
    subscribe(subject, onMsg) {
      const sid = String(this.nextSid++);
      this.subs.set(sid, { subject, onMsg });
      if (this.ready) this.send(`SUB ${subject} ${sid}\r\n`);
    }
    connect() {
      this.ready = false; this.buf = new Uint8Array(0);
      const ws = this.ws = new WebSocket(this.url);
      ws.binaryType = "arraybuffer";
      ws.onmessage = (ev) => this.feed(new Uint8Array(ev.data instanceof ArrayBuffer ? ev.data : enc.encode(ev.data)));
      ws.onclose = () => {
        this.ready = false; this.h.status("disconnected; retrying");
        if (!this.closed) setTimeout(() => this.connect(), 2000);
      };
      ws.onerror = () => this.h.status("connection error");
    }
    send(text) { if (this.ws && this.ws.readyState === 1) this.ws.send(enc.encode(text)); }
    feed(chunk) {
      const all = new Uint8Array(this.buf.length + chunk.length);
      all.set(this.buf); all.set(chunk, this.buf.length);
      let pos = 0;
      for (;;) {
        let eol = -1;
        for (let i = pos; i + 1 < all.length; i++) if (all[i] === 13 && all[i + 1] === 10) { eol = i; break; }
        if (eol < 0) break;
        const line = dec.decode(all.subarray(pos, eol));
        const op = line.split(" ", 1)[0].toUpperCase();
        if (op === "MSG") {  // MSG <subject> <sid> [reply-to] <#bytes>
          const parts = line.split(" ").filter(Boolean), size = Number(parts[parts.length - 1]);
          if (all.length < eol + 2 + size + 2) break;  // wait for the whole payload
          const payload = all.slice(eol + 2, eol + 2 + size);
          pos = eol + 2 + size + 2;
          const sub = this.subs.get(parts[2]);
          if (sub) sub.onMsg(parts[1], payload);
          continue;
        }
        pos = eol + 2;
        if (op === "INFO") this.hello(JSON.parse(line.slice(5)));
        else if (op === "PING") this.send("PONG\r\n");
        else if (op === "PONG") { if (!this.ready) { this.ready = true; this.h.status("connected"); } }
        else if (op === "-ERR") this.h.status("server error: " + line.slice(5));
      }
      this.buf = all.slice(pos);
    }
    hello(info) {
      const connect = { verbose: false, pedantic: false, protocol: 1, headers: false,
        no_responders: false, lang: "tycoon-web", version: "1", name: "tycoon-web viewer",
        nkey: this.publicKey };
      if (info.nonce) connect.sig = b64url(nacl.sign.detached(enc.encode(info.nonce), this.keyPair.secretKey));
      let text = `CONNECT ${JSON.stringify(connect)}\r\n`;
      for (const [sid, s] of this.subs) text += `SUB ${s.subject} ${sid}\r\n`;
      this.send(text + "PING\r\n");
    }
  }
  root.NatsWS = NatsWS;
})(self);
