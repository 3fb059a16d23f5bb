// Verify Chatsvia webhooks in Node (no dependencies):
//
//   WEBHOOK_SECRET=whsec_... node verify.js     # listens on :3000, POST /webhook
//
// verifyWebhookSignature is the function from our webhook page, unchanged.
// It recomputes the MAC over JSON.stringify(body); that works because we
// send the body in exactly that form.  What the page leaves out is added
// around it: a timestamp check against replays, and a guard for signatures
// of the wrong length (crypto.timingSafeEqual throws on those).
'use strict';
const crypto = require('crypto');
const http = require('http');

const TOLERANCE_MS = 5 * 60 * 1000;
const SEEN_LIMIT = 100000; // in production: a unique key on X-Webhook-Id in your database
// Event ids already handled: every attempt and every replay carries the same one.
const seen = new Set();
// Per order, the newest updatedAt handled: events of one order may arrive out of order.
const latest = new Map();

function handle(eventType, order) {
  const stamp = order.updatedAt || order.createdAt || '';
  // ISO-8601 UTC strings compare correctly as text.
  if (stamp < (latest.get(order.id) || '')) {
    console.log('stale', eventType, order.orderNumber, '(a newer update was handled)');
    return;
  }
  latest.set(order.id, stamp);
  console.log(eventType, order.orderNumber, order.status);
}

function verifyWebhookSignature(payload, signatureHeader, secret) {
  // Parse the signature header: "t=timestamp,v1=signature"
  const parts = {};
  signatureHeader.split(',').forEach(part => {
    const [key, value] = part.split('=');
    parts[key] = value;
  });
  const timestamp = parts['t'];
  const receivedSignature = parts['v1'];
  // Recreate the signed payload: "timestamp.jsonBody"
  const signedPayload = `${timestamp}.${JSON.stringify(payload)}`;
  const expectedSignature = crypto
    .createHmac('sha256', secret)
    .update(signedPayload)
    .digest('hex');
  return crypto.timingSafeEqual(
    Buffer.from(receivedSignature),
    Buffer.from(expectedSignature)
  );
}

function isValidWebhook(payload, signatureHeader, secret) {
  const match = /(?:^|,)t=(\d+)(?:,|$)/.exec(signatureHeader || '');
  const v1 = /(?:^|,)v1=([0-9a-f]{64})(?:,|$)/.test(signatureHeader || '');
  if (!match || !v1) return false;
  // Old (or far-future) timestamps: a replayed or badly delayed request.
  if (Math.abs(Date.now() - Number(match[1])) > TOLERANCE_MS) return false;
  return verifyWebhookSignature(payload, signatureHeader, secret);
}

http.createServer((req, res) => {
  let raw = '';
  req.setEncoding('utf8');
  req.on('data', chunk => { raw += chunk; });
  req.on('end', () => {
    let body;
    try { body = JSON.parse(raw); } catch { body = undefined; }
    const signature = req.headers['x-webhook-signature'];
    if (body === undefined || !isValidWebhook(body, signature, process.env.WEBHOOK_SECRET)) {
      res.writeHead(401, { 'Content-Type': 'application/json' });
      return res.end(JSON.stringify({ error: 'Invalid signature' }));
    }
    res.writeHead(200, { 'Content-Type': 'application/json' });
    if (req.headers['x-webhook-test'] === 'true') {
      // "Verify & Test" from the dashboard: answer 2xx, change nothing.
      return res.end(JSON.stringify({ received: true, test: true }));
    }
    const eventId = req.headers['x-webhook-id'] || '';
    if (seen.has(eventId)) {
      // A retry after a lost answer, or a replay: already handled.
      return res.end(JSON.stringify({ received: true, duplicate: true }));
    }
    handle(req.headers['x-webhook-event'], body.data || {});
    seen.add(eventId);
    if (seen.size > SEEN_LIMIT) seen.delete(seen.values().next().value);
    res.end(JSON.stringify({ received: true }));
  });
}).listen(Number(process.env.PORT || 3000), () => {
  console.log(`listening on :${process.env.PORT || 3000}`);
});
