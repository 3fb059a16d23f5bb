// verifyWebhookSignature copied verbatim (including the page's lost
// indentation) from the Chatsvia webhook product page
// (/work/shared/seed/000_7c2f43f01a29a06f.txt, "Secure Webhook Delivery").
// Tests run our signatures through it unchanged, so do not "fix" it here:
// its quirks (the last v1= wins, timingSafeEqual throws on a length
// mismatch, the MAC covers JSON.stringify(req.body)) are what merchants run.
const crypto = require('crypto');
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

module.exports = { verifyWebhookSignature };
