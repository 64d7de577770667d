// An HTTP server in front of the index, the way a webhook server or a
// Lambda emulator would run it: POST an event, get the event back.
const http = require('http');
const { handler } = require('./index');

const [host, port] = (process.argv[2] || '127.0.0.1:8090').split(':');

http
  .createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', async () => {
      try {
        const event = JSON.parse(Buffer.concat(chunks).toString());
        const out = await handler(event, {});
        const body = JSON.stringify(out);
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      } catch (error) {
        const body = JSON.stringify({ error: { kind: 'denied', message: String(error.message) } });
        res.writeHead(422, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      }
    });
  })
  .listen(Number(port), host);
