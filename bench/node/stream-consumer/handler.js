// The benchmark's Kinesis handler in JavaScript: the same logic as the
// `stream-bench` guest (tests/guests/stream-bench). Each record's data
// begins with its send time in microseconds since the Unix epoch; the
// handler reads the clock once per batch, reports each record's time
// from send to handler, and waits `waitMs` per batch if asked.

const clockUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);

exports.handler = async (event, { waitMs, report }) => {
  const now = clockUs();
  const latencies = event.Records.map((record) => {
    const data = Buffer.from(record.kinesis.data, 'base64').toString('latin1');
    const sent = /^\d+/.exec(data);
    return sent ? String(Math.max(0, now - Number(sent[0]))) : '-';
  });
  report(`stream-bench ${latencies.join(',')}`);
  if (waitMs > 0) {
    await new Promise((resolve) => setTimeout(resolve, waitMs));
  }
  return { batchItemFailures: [] };
};
