// A Node.js consumer of a Triggerfish stream on NATS JetStream, for the
// streams benchmark (bench/src/streams.rs): what a team would write
// without Triggerfish. One durable pull consumer per shard subject
// (`tf.<tenant>.<stream>.<shard>`), each run one batch at a time so that
// records stay in order per shard, as Triggerfish's lanes do: the batch is
// whatever has arrived, up to the batch size (no batching window), built
// into Lambda's Kinesis event and handed to handler.js; then the batch's
// last message is acknowledged (AckPolicy.All: a checkpoint).
//
// usage: node index.js NATS_URL TENANT STREAM SHARDS BATCH_SIZE WAIT_MS
// Prints one line per batch on stdout (`stream-bench <µs>,...`) and
// `ready` once its consumers exist. The `nats` package comes from
// NODE_PATH (the bench installs package-lock.json's versions into target/).

const { connect, AckPolicy, DeliverPolicy } = require('nats');
const { handler } = require('./handler');

const [url, tenant, stream, shards, batchSize, waitMs] = process.argv.slice(2);
// The host's names: letters, digits and `-` as they are (the bench uses
// only those).
const streamName = `TF__${tenant}__${stream}`;
const arn = `arn:triggerfish:kinesis:local:${tenant}:stream/${stream}`;

const lines = [];
const report = (line) => {
  lines.push(line);
  if (lines.length >= 64) flush();
};
const flush = () => {
  if (lines.length) process.stdout.write(`${lines.join('\n')}\n`);
  lines.length = 0;
};
setInterval(flush, 20).unref();

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function shard(js, jsm, n) {
  const name = `node-${n}`;
  await jsm.consumers.add(streamName, {
    durable_name: name,
    filter_subject: `tf.${tenant}.${stream}.${n}`,
    ack_policy: AckPolicy.All,
    deliver_policy: DeliverPolicy.All,
    max_ack_pending: 10000,
  });
  const consumer = await js.consumers.get(streamName, name);
  // Messages arrive as soon as the server has them (the client keeps pull
  // requests open); the loop below takes them in batches.
  const queue = [];
  let wake = null;
  await consumer.consume({
    max_messages: Math.max(2 * Number(batchSize), 100),
    callback: (m) => {
      queue.push(m);
      if (wake) wake();
    },
  });
  for (;;) {
    if (queue.length === 0) {
      await new Promise((resolve) => { wake = resolve; });
      wake = null;
      continue;
    }
    const batch = queue.splice(0, Number(batchSize));
    const Records = batch.map((m) => {
      const message = JSON.parse(m.string());
      const seq = String(m.seq);
      return {
        kinesis: {
          kinesisSchemaVersion: '1.0',
          partitionKey: message.key,
          sequenceNumber: seq,
          data: message.body.data,
          approximateArrivalTimestamp: message.arrivedMs / 1000,
        },
        eventSource: 'aws:kinesis',
        eventVersion: '1.0',
        eventID: `shardId-${String(n).padStart(12, '0')}:${seq}`,
        eventName: 'aws:kinesis:record',
        awsRegion: 'local',
        eventSourceARN: arn,
      };
    });
    await handler({ Records }, { waitMs: Number(waitMs), report });
    batch[batch.length - 1].ack();
  }
}

(async () => {
  const nc = await connect({ servers: url });
  const jsm = await nc.jetstreamManager();
  const js = nc.jetstream();
  // The host creates the stream with the first records posted.
  for (let i = 0; ; i += 1) {
    try {
      await jsm.streams.info(streamName);
      break;
    } catch (error) {
      if (i > 600) throw error;
      await sleep(50);
    }
  }
  const loops = [];
  for (let n = 0; n < Number(shards); n += 1) loops.push(shard(js, jsm, n));
  process.stdout.write('ready\n');
  await Promise.all(loops);
})().catch((error) => {
  process.stderr.write(`stream-consumer: ${error.stack || error}\n`);
  process.exit(1);
});
