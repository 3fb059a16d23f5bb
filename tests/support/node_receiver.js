// An Express-like webhook receiver in plain node, using the product page's own
// verifyWebhookSignature over JSON.stringify(JSON.parse(body)), as a merchant's
// `app.use(express.json())` server would. Prints its port on stdout, then
// serves: POST /webhook (verify, record, 200 or 401) and GET /log (records).
// Usage: node node_receiver.js SECRET
const http = require('http');
const { verifyWebhookSignature } = require('./page_verifier.js');

const secret = process.argv[2];
const records = [];

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/log') {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(records));
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const raw = Buffer.concat(chunks).toString('utf8');
    let valid = false;
    let error = null;
    let body = null;
    try {
      body = JSON.parse(raw);
      valid = verifyWebhookSignature(body, req.headers['x-webhook-signature'], secret);
    } catch (e) {
      error = String(e);
    }
    records.push({
      valid,
      error,
      contentType: req.headers['content-type'],
      event: req.headers['x-webhook-event'],
      attempt: req.headers['x-webhook-attempt'],
      id: req.headers['x-webhook-id'],
      userAgent: req.headers['user-agent'],
      signature: req.headers['x-webhook-signature'],
      body,
      raw,
    });
    res.writeHead(valid ? 200 : 401, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(valid ? { received: true } : { error: 'Invalid signature' }));
  });
});

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${server.address().port}\n`);
});
