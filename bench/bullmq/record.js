// Records the commands a BullMQ workload sends, for bench/bullmq/replay.py.
//
//   node record.js <port> <jobs> <out.jsonl>
//
// Runs a queue against the server on 127.0.0.1:<port> through BullMQ's own client code
// (ioredis, native EVALSHA): <jobs> jobs added (standard, delayed and prioritized), a
// worker at concurrency 10 that reports progress, writes logs and fails one job in ten
// on its first attempt (retried with a backoff), and job counts read as it goes. Every
// command BullMQ sends is written in send order, one JSON line each: the connection, the
// command and its arguments (base64). A first line maps each script's SHA1 to its name
// and body, so the replay can load them and report per script.
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const IORedis = require('ioredis');
const { Queue, Worker } = require('bullmq');
const bullScripts = require('bullmq/dist/cjs/scripts');

const [port, jobs, outPath] = [Number(process.argv[2]), Number(process.argv[3]), process.argv[4]];
const out = fs.openSync(outPath, 'w');

const scripts = {};
for (const s of Object.values(bullScripts)) {
  const sha = crypto.createHash('sha1').update(s.content).digest('hex');
  scripts[sha] = { name: s.name, keys: s.keys, body: s.content };
}
fs.writeSync(out, JSON.stringify({ scripts }) + '\n');

// Every command of every connection, as sent.
let connections = 0;
const original = IORedis.prototype.sendCommand;
IORedis.prototype.sendCommand = function (command, stream) {
  if (this.__rxConn === undefined) this.__rxConn = connections++;
  const args = (command.args || []).map((a) =>
    Buffer.isBuffer(a) ? a.toString('base64') : Buffer.from(String(a)).toString('base64'));
  fs.writeSync(out, JSON.stringify({ c: this.__rxConn, n: command.name, a: args }) + '\n');
  return original.call(this, command, stream);
};

async function main() {
  const connection = { host: '127.0.0.1', port, maxRetriesPerRequest: null };
  const queue = new Queue('bench', { connection });
  let failedOnce = 0;
  let done = 0;
  let finish;
  const finished = new Promise((resolve) => { finish = resolve; });
  const worker = new Worker('bench', async (job) => {
    if (job.data.i % 5 === 0) await job.updateProgress(50);
    if (job.data.i % 7 === 0) await job.log(`step ${job.data.i}`);
    if (job.data.i % 10 === 3 && job.attemptsMade === 0) {
      failedOnce++;
      throw new Error(`first attempt of ${job.data.i} fails`);
    }
    return { doubled: job.data.i * 2, tags: ['a', 'b'], at: job.data.i };
  }, { connection, concurrency: 10 });
  worker.on('completed', () => { if (++done === jobs) finish(); });
  worker.on('failed', (job) => {
    if (job && job.attemptsMade >= (job.opts.attempts || 1) && ++done === jobs) finish();
  });

  const payload = { user: 'u123', items: [1, 2, 3], note: 'x'.repeat(64) };
  for (let i = 0; i < jobs; i += 50) {
    const batch = [];
    for (let j = i; j < Math.min(i + 50, jobs); j++) {
      const opts = { attempts: 2, backoff: { type: 'fixed', delay: 5 } };
      if (j % 10 === 1) opts.delay = 5 + (j % 20);
      if (j % 10 === 2) opts.priority = 1 + (j % 5);
      batch.push(queue.add(`job${j % 4}`, { i: j, ...payload }, opts));
    }
    await Promise.all(batch);
    if (i % 500 === 0) await queue.getJobCounts('waiting', 'active', 'completed', 'failed', 'delayed');
  }
  await finished;
  const counts = await queue.getJobCounts('completed', 'failed', 'delayed', 'waiting', 'active');
  await worker.close();
  await queue.close();
  fs.closeSync(out);
  console.log(`recorded ${jobs} jobs (${failedOnce} failed once and were retried): ${JSON.stringify(counts)}`);
}

main().catch((e) => { console.error(e); process.exit(1); });
