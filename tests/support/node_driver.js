// Long-lived helper for tests/support/node_bridge.py: one JSON request per
// stdin line, one JSON reply per stdout line, so a test pays a pipe round
// trip per example instead of a node start-up (~40 ms).
'use strict';
const readline = require('readline');
const { verifyWebhookSignature } = require('./page_verifier.js');

function utf8(b64) {
  const buf = Buffer.from(b64, 'base64');
  const text = buf.toString('utf8');
  // toString('utf8') silently substitutes U+FFFD; a body that does not
  // survive the round trip was not valid UTF-8 in the first place.
  if (!Buffer.from(text, 'utf8').equals(buf)) throw new Error('body is not valid UTF-8');
  return text;
}

const b64 = (text) => Buffer.from(text, 'utf8').toString('base64');

const ops = {
  // Is `body` a fixed point of JSON.stringify(JSON.parse(.)), and is it what
  // JS makes of `ref` (the same value written by Python's json.dumps)?
  check({ body, ref }) {
    const text = utf8(body);
    const again = JSON.stringify(JSON.parse(text));
    const reply = { fixed: again === text, again: b64(again) };
    if (ref !== undefined) {
      const expected = JSON.stringify(JSON.parse(ref));
      reply.same = expected === text;
      reply.expected = b64(expected);
    }
    return reply;
  },
  // JSON.stringify(JSON.parse(body)), or the parse error.
  canon({ body }) {
    return { out: b64(JSON.stringify(JSON.parse(utf8(body)))) };
  },
  // The product page's own receiver code on a signed body.
  verify({ body, header, secret }) {
    return { valid: verifyWebhookSignature(JSON.parse(utf8(body)), header, secret) };
  },
};

const rl = readline.createInterface({ input: process.stdin, terminal: false });
rl.on('line', (line) => {
  let reply;
  try {
    const req = JSON.parse(line);
    reply = ops[req.op](req);
  } catch (err) {
    reply = { error: `${err.name}: ${err.message}` };
  }
  process.stdout.write(JSON.stringify(reply) + '\n');
});
