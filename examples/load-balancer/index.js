'use strict';
// A round-robin HTTP load balancer: http-proxy forwards each request to the
// next healthy backend; active health checks take failing backends out of
// rotation and put them back when they recover. Configured by environment:
//
//   BACKENDS         comma-separated http:// URLs (required)
//   HEALTH_PATH      path each backend is checked with (GET, 2xx/3xx = up)
//   HEALTH_INTERVAL  seconds between checks
//   HEALTH_TIMEOUT   seconds a check may take
//
// GET /healthz is answered by the balancer itself (200, backends' state).
const http = require('node:http');
const httpProxy = require('http-proxy');

const port = Number(process.env.PORT) || 3000;
const healthPath = process.env.HEALTH_PATH || '/';
const healthInterval = 1000 * (Number(process.env.HEALTH_INTERVAL) || 3);
const healthTimeout = 1000 * (Number(process.env.HEALTH_TIMEOUT) || 2);
// How long a backend may take to start answering a proxied request.
const proxyTimeout = 30_000;

const backends = (process.env.BACKENDS || '')
  .split(',')
  .map((url) => url.trim())
  .filter(Boolean)
  .map((url) => ({ url, up: true }));
for (const { url } of backends) {
  if (!/^http:\/\/[^/]+/.test(url)) fail(`BACKENDS: ${url} is not an http:// URL`);
}
if (backends.length === 0) fail('BACKENDS is empty: set it to comma-separated http:// URLs');

function fail(message) {
  console.error(`load-balancer: error: ${message}`);
  process.exit(1);
}

function setState(backend, up, why) {
  if (backend.up === up) return;
  backend.up = up;
  console.log(`load-balancer: backend ${backend.url} is ${up ? 'up' : `down (${why})`}`);
}

// Round robin: the next healthy backend after the last one chosen,
// skipping those this request has already tried.
let next = 0;
function pick(tried) {
  for (let i = 0; i < backends.length; i++) {
    const index = (next + i) % backends.length;
    const backend = backends[index];
    if (backend.up && !tried.has(backend)) {
      next = index + 1;
      return backend;
    }
  }
  return null;
}

const proxy = httpProxy.createProxyServer({ xfwd: true, proxyTimeout });

function forward(req, res, tried) {
  const backend = pick(tried);
  res.backend = backend;
  if (!backend) {
    res.writeHead(502, { 'content-type': 'text/plain' });
    res.end('502 Bad Gateway: no healthy backend\n');
    return;
  }
  tried.add(backend);
  proxy.web(req, res, { target: backend.url }, (err) => {
    setState(backend, false, err.code || err.message);
    // Only a request with no body and no effects may be sent again, and
    // only while nothing of the answer has gone out.
    if (!res.headersSent && (req.method === 'GET' || req.method === 'HEAD')) {
      forward(req, res, tried);
    } else if (!res.headersSent) {
      res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`502 Bad Gateway: ${backend.url} failed\n`);
    } else {
      res.destroy();
    }
  });
}

const server = http.createServer((req, res) => {
  const start = Date.now();
  res.on('close', () => {
    const target = res.backend ? res.backend.url : '-';
    const ms = Date.now() - start;
    console.log(`${req.method} ${req.url} -> ${target} ${res.statusCode} ${ms}ms`);
  });
  if (req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ backends }) + '\n');
    return;
  }
  forward(req, res, new Set());
});

// One GET of the health path with a fresh connection: resolves to null
// when the backend is up, else to why it is not.
function check(backend) {
  return new Promise((resolve) => {
    const url = new URL(healthPath, backend.url);
    const req = http.get(url, { agent: false, timeout: healthTimeout }, (res) => {
      res.resume();
      const ok = res.statusCode >= 200 && res.statusCode < 400;
      resolve(ok ? null : `health check answered ${res.statusCode}`);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer in ${healthTimeout} ms`)));
    req.on('error', (err) => resolve(err.code || err.message));
  });
}

async function checkAll() {
  await Promise.all(
    backends.map(async (backend) => {
      const why = await check(backend);
      setState(backend, why === null, why);
    }),
  );
  setTimeout(checkAll, healthInterval);
}

server.listen(port, () => {
  const list = backends.map((b) => b.url).join(', ');
  console.log(`load-balancer: listening on port ${port}, backends ${list}`);
  checkAll();
});

process.on('SIGTERM', () => {
  console.log('load-balancer: SIGTERM received, closing');
  server.close(() => process.exit(0));
});
