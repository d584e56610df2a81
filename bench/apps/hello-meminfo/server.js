'use strict';
// bench/compare's app, booted both as nodeos and as a Debian VM: every path
// answers a greeting like examples/hello, except GET /meminfo, which returns
// the guest kernel's /proc/meminfo (the idle-memory figure reads it).
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');

const port = Number(process.env.PORT) || 3000;

const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
  if (req.url === '/meminfo') {
    res.end(fs.readFileSync('/proc/meminfo', 'utf8'));
  } else {
    res.end(`hello from ${os.hostname()} (node ${process.version})\n`);
  }
});

server.listen(port, () => {
  console.log(`hello-meminfo: listening on port ${port}`);
});

process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
});
