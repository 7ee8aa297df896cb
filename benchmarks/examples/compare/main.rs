//! Issue 3, items 2–5: the pool against the clients a user would pick instead, on the same
//! workload in the same run, printed as one table.
//!
//! `cargo run -p backend-pool-benchmarks --release --example compare` (about a minute on 2
//! cores). Environment knobs: `COMPARE_ROUNDS` (A/B rounds per throughput test, default 5),
//! `COMPARE_HTTP_N` (requests per peer per round, default 20000), `COMPARE_WS_N` (echo round
//! trips per peer per round, default 10000), `COMPARE_ONLY` (a comma list of sections: memory,
//! http8, http64, ws, spike, fairness), `COMPARE_PEERS` (HTTP peers to run: pool,
//! pool-checkout, ureq, ureq-timeouts, reqwest), `COMPARE_HTTP_URL` (load another keep-alive
//! server on loopback in the HTTP throughput sections, e.g. nginx: see BENCHMARKS.md).
//!
//! Each HTTP throughput round also records the process's CPU time (`getrusage`, all threads)
//! per completed request: the clients' own cost, steadier than throughput on a busy machine.
//!
//! The servers (HTTP keep-alive, a slow-first-response HTTP, WebSocket echo) run in a child
//! process, this binary re-executed with `--server`, so server CPU bookkeeping and memory do
//! not count against the clients. Everything is on loopback and every loop is bounded by a
//! count and a deadline.

#[path = "../support/fastserver.rs"]
mod fastserver;

mod bursts;
mod http;
mod memory;
mod report;
mod server;
mod ws;

use bursts::*;
use http::*;
use memory::*;
use report::*;
use server::*;
use ws::*;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use backend_pool::{HttpPoolConfig, ManagerConfig, PoolManager, ServiceConfig, WsPoolConfig};

/// No single measured run may take longer than this.
const RUN_DEADLINE: Duration = Duration::from_secs(20);

fn main() {
    if std::env::args().any(|a| a == "--server") {
        fastserver::run();
    }
    let mut server = Server::start();
    let rounds = env_usize("COMPARE_ROUNDS", 5).max(1);
    let http_n = env_usize("COMPARE_HTTP_N", 20_000) as u64;
    let ws_n = env_usize("COMPARE_WS_N", 10_000) as u64;
    println!(
        "compare: {} CPUs, {rounds} A/B rounds, {http_n} HTTP requests and {ws_n} WebSocket round trips per peer per round",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // `COMPARE_ONLY=http8,ws` runs a subset (for profiling): memory, http8, http64, ws, spike,
    // fairness.
    let only = std::env::var("COMPARE_ONLY").unwrap_or_default();
    let want = |name: &str| only.is_empty() || only.split(',').any(|s| s.trim() == name);
    let mut table = Table::default();
    // Memory first: later sections leave freed heap behind that would hide growth.
    if want("memory") {
        memory(&mut server, &mut table);
    }
    for threads in [8, 64] {
        if want(&format!("http{threads}")) {
            http_throughput(&mut server, &mut table, threads, http_n, rounds);
        }
    }
    if want("ws") {
        ws_round_trips(&mut server, &mut table, 8, ws_n, rounds);
    }
    if want("spike") {
        spike(&mut server, &mut table);
    }
    if want("fairness") {
        fairness(&mut server, &mut table);
    }
    table.print();
    server.stop();
}

/// `COMPARE_PEERS=pool` runs only the named HTTP peers (pool, pool-checkout, ureq, reqwest), for
/// profiling one client at a time.
fn peer_wanted(name: &str) -> bool {
    let peers = std::env::var("COMPARE_PEERS").unwrap_or_default();
    peers.is_empty() || peers.split(',').any(|p| p.trim() == name)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
