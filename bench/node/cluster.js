// The same server as server.js, run as a Node.js cluster: one worker
// process per core (node's `cluster` module), all accepting on one port,
// the way a Node deployment uses every core of a host.
const cluster = require('cluster');
const os = require('os');

if (cluster.isPrimary) {
  const workers = Number(process.env.WORKERS) || os.availableParallelism();
  for (let i = 0; i < workers; i += 1) cluster.fork();
  // A worker that dies is not replaced: the benchmark notices the errors.
  cluster.on('exit', (worker, code) => console.error(`worker ${worker.process.pid} exited with ${code}`));
} else {
  // Workers get the primary's arguments: server.js reads the address.
  require('./server');
}
