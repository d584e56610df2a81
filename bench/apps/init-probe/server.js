// bench/init's probe: GET / answers 200; GET /crash exits the process with
// code 1 (init restarts it); GET /init reports nodeos-init's memory from
// /proc/1/status (readable by the unprivileged app).
const fs = require('fs');
const http = require('http');

function initMemory() {
  const status = fs.readFileSync('/proc/1/status', 'utf8');
  const kb = (key) => Number((status.match(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm')) || [])[1]);
  return { rssKiB: kb('VmRSS'), hwmKiB: kb('VmHWM'), threads: Number(status.match(/^Threads:\s+(\d+)/m)[1]) };
}

http
  .createServer((req, res) => {
    if (req.url === '/crash') {
      res.end('crashing\n', () => process.exit(1));
    } else if (req.url === '/init') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(initMemory()) + '\n');
    } else {
      res.end('ok\n');
    }
  })
  .listen(Number(process.env.PORT));
