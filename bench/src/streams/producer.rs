//! The producer: records stamped with the time they are sent, posted as a
//! backlog or at a steady rate.

use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Partition keys the producer cycles through (spread over every shard
/// and lane).
const KEYS: usize = 256;
/// Bytes of padding after the send time in each record's data.
const PADDING: usize = 84;
/// Records per POST when filling a backlog (PutRecords allows 500).
const POST_RECORDS: usize = 500;

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// A PutRecords body of `n` records stamped with the time now.
fn put_records(n: usize, counter: &mut usize) -> Value {
    use base64::Engine as _;
    let padding = "x".repeat(PADDING);
    let records: Vec<Value> = (0..n)
        .map(|_| {
            *counter += 1;
            let data = format!("{:016} {padding}", now_us());
            json!({
                "PartitionKey": format!("key-{}", *counter % KEYS),
                "Data": base64::engine::general_purpose::STANDARD.encode(data),
            })
        })
        .collect();
    json!({ "Records": records })
}

async fn post(client: &reqwest::Client, url: &str, body: Value) -> anyhow::Result<()> {
    let response = client.post(url).json(&body).send().await?;
    let status = response.status();
    anyhow::ensure!(
        status.is_success(),
        "POST {url}: {status} {}",
        response.text().await.unwrap_or_default()
    );
    Ok(())
}

/// Posts `total` records as fast as 4 requests at a time go, round robin
/// over the hosts; returns the records per second ingested.
pub(super) async fn fill(urls: &[String], total: usize) -> anyhow::Result<f64> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut counter = 0;
    let mut requests = Vec::new();
    let mut left = total;
    let mut i = 0;
    while left > 0 {
        let n = left.min(POST_RECORDS);
        left -= n;
        requests.push((urls[i % urls.len()].clone(), put_records(n, &mut counter)));
        i += 1;
    }
    let requests = Arc::new(Mutex::new(requests));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (client, requests) = (client.clone(), requests.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let next = requests.lock().unwrap().pop();
                let Some((url, body)) = next else {
                    return anyhow::Ok(());
                };
                post(&client, &url, body).await?;
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Posts at `rate` records per second for `duration` (a request every
/// 10 ms, round robin over the hosts, at most 32 in flight); returns the
/// records posted.
pub(super) async fn paced(urls: &[String], rate: f64, duration: Duration) -> anyhow::Result<usize> {
    let client = reqwest::Client::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let (mut owed, mut counter, mut sent, mut i) = (0.0, 0, 0, 0);
    let mut requests = Vec::new();
    while started.elapsed() < duration {
        tick.tick().await;
        owed += rate / 100.0;
        let n = owed.floor() as usize;
        if n == 0 {
            continue;
        }
        owed -= n as f64;
        sent += n;
        let permit = slots.clone().acquire_owned().await?;
        let body = put_records(n, &mut counter);
        let (client, url) = (client.clone(), urls[i % urls.len()].clone());
        i += 1;
        requests.push(tokio::spawn(async move {
            let _permit = permit;
            post(&client, &url, body).await
        }));
    }
    for request in requests {
        request.await??;
    }
    Ok(sent)
}
