'use strict';
// The nodeos hello appliance: answers every request with a greeting and
// shuts down cleanly on SIGTERM (what nodeos-init sends on power-off).
const http = require('node:http');
const os = require('node:os');

const port = Number(process.env.PORT) || 3000;

const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
  res.end(`hello from nodeos (node ${process.version}, ${os.hostname()})\n`);
});

server.listen(port, () => {
  console.log(`hello: listening on port ${port}`);
});

process.on('SIGTERM', () => {
  console.log('hello: SIGTERM received, closing');
  server.close(() => process.exit(0));
});
